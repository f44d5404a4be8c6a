"""Noise schedules: training betas, a model's sigma <-> timestep table, sampling schedules and sigma arithmetic."""

from .arithmetic import (
    concat,
    flip,
    insert_intermediate,
    loglinear_interpolate,
    multiply,
    parse_sigmas,
    resample,
    set_first,
    split_at_denoise,
    split_at_step,
)
from .model import FlowSchedule, ModelSchedule
from .registry import SCHEDULES, ScheduleSpec, get_sigmas
from .sampling import spaced_timesteps
from .training import rescale_zero_terminal_snr, training_betas

__all__ = [
    "training_betas",
    "rescale_zero_terminal_snr",
    "ModelSchedule",
    "FlowSchedule",
    "SCHEDULES",
    "ScheduleSpec",
    "get_sigmas",
    "spaced_timesteps",
    "split_at_step",
    "split_at_denoise",
    "concat",
    "flip",
    "set_first",
    "multiply",
    "resample",
    "loglinear_interpolate",
    "parse_sigmas",
    "insert_intermediate",
]
