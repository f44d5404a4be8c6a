"""Noise schedules: training betas, a model's sigma <-> timestep table, sampling schedules and sigma arithmetic."""

from .model import FlowSchedule, ModelSchedule
from .training import rescale_zero_terminal_snr, training_betas

__all__ = ["training_betas", "rescale_zero_terminal_snr", "ModelSchedule", "FlowSchedule"]
