"""The named sampling schedules and get_sigmas, the one entry point that validates inputs and applies denoise."""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from . import sampling
from .validation import (check_choice, check_denoise, check_options, check_positive, check_schedule_output,
                         check_sigma_range, check_steps)

RANGE = ("sigma_min", "sigma_max")


@dataclass(frozen=True)
class ScheduleSpec:
    """A sampling schedule: its function and the facts nodes show about it."""

    fn: Callable  # fn(steps, [model=] [sigma_min=] [sigma_max=], **params) -> descending float64 sigmas
    needs_table: bool  # reads a model's noise table (sigma(t), timestep(sigma)), not just a range
    params: dict  # option name -> default
    summary: str  # one line: the paper or idea
    bounds: tuple = ()  # which of sigma_min / sigma_max it reads (from the model unless given)


def _align_your_steps(model_type, family):
    """Align Your Steps' fixed schedule for one model family (Sabour et al. 2024)."""
    return ScheduleSpec(partial(sampling.align_your_steps, model_type=model_type), False, {},
                        f"Align Your Steps for {family} (Sabour et al. 2024).")


def _diffusers_spacing(spacing, how, params=None):
    """One of diffusers' timestep spacings over the model's table (Lin et al. 2024, tab. 2)."""
    return ScheduleSpec(partial(sampling.diffusers_spacing, spacing=spacing), True, params or {},
                        f"diffusers' {spacing} spacing: {how} (Lin et al. 2024, tab. 2).")


SCHEDULES = {
    "simple": ScheduleSpec(sampling.simple, True, {}, "Every (T/steps)-th entry of the model's noise table (ComfyUI)."),
    "sgm_uniform": ScheduleSpec(
        sampling.sgm_uniform, True, {}, "Evenly spaced timesteps, sigma_min left out (Stability AI's sgm)."
    ),
    "karras": ScheduleSpec(
        sampling.karras, False, {"rho": 7.0}, "Evenly spaced in sigma^(1/rho) (Karras et al. 2022, eq. 5).", RANGE
    ),
    "exponential": ScheduleSpec(sampling.exponential, False, {}, "Evenly spaced in log sigma (k-diffusion).", RANGE),
    "ddim_uniform": ScheduleSpec(
        sampling.ddim_uniform, True, {}, "Every (T // steps)-th timestep from 1 (DDIM, Song et al. 2021)."
    ),
    "beta": ScheduleSpec(
        sampling.beta_sampling,
        True,
        {"alpha": 0.6, "beta": 0.6},
        "Timesteps at Beta(alpha, beta) quantiles (Lee et al. 2024).",
    ),
    "normal": ScheduleSpec(sampling.normal, True, {}, "Evenly spaced in the model's timestep (k-diffusion)."),
    "linear_quadratic": ScheduleSpec(
        sampling.linear_quadratic,
        False,
        {"threshold_noise": 0.025, "linear_steps": None},
        "Linear, then quadratic noise removal (Genmo's Mochi).",
        ("sigma_max",),
    ),
    "kl_optimal": ScheduleSpec(
        sampling.kl_optimal, False, {}, "Evenly spaced in arctan(sigma) (Sabour et al. 2024, thm. 3.1).", RANGE
    ),
    "polyexponential": ScheduleSpec(
        sampling.polyexponential, False, {"rho": 1.0}, "Polynomial ramp in log sigma (k-diffusion).", RANGE
    ),
    "vp": ScheduleSpec(
        sampling.vp,
        False,
        {"beta_d": 19.9, "beta_min": 0.1, "eps_s": 1e-3},
        "Continuous VP SDE noise levels (Song et al. 2021); ignores the model.",
    ),
    "laplace": ScheduleSpec(
        sampling.laplace, False, {"mu": 0.0, "beta": 0.5}, "Log sigma at Laplace quantiles (Hang et al. 2024).", RANGE
    ),
    "sd_turbo": ScheduleSpec(
        sampling.sd_turbo, True, {}, "Timesteps 999, 899, ... (SD-Turbo, Sauer et al. 2023); at most 10 steps."
    ),
    "ays_sd1": _align_your_steps("sd1", "SD1.x"),
    "ays_sdxl": _align_your_steps("sdxl", "SDXL"),
    "ays_svd": _align_your_steps("svd", "SVD"),
    "gits": ScheduleSpec(
        sampling.gits, False, {"coeff": 1.2}, "Geometry-inspired time steps for SD1.5 (Chen et al. 2024)."
    ),
    "leading": _diffusers_spacing("leading", "T//steps apart from steps_offset", {"steps_offset": 1}),
    "trailing": _diffusers_spacing("trailing", "T/steps apart down from T-1"),
    "linspace": _diffusers_spacing("linspace", "evenly from T-1 to 0"),
}


def get_sigmas(name: str, steps: int, model=None, sigma_min: float | None = None, sigma_max: float | None = None,
               denoise: float = 1.0, **params) -> torch.Tensor:
    """The named schedule as a descending 1-D float32 CPU tensor, usually ending in 0.

    Range schedules take sigma_min/sigma_max from the arguments, else from `model`; table schedules need `model`
    (a ModelSchedule, FlowSchedule or anything with .sigmas, .sigma_min, .sigma_max, .sigma(t), .timestep(sigma));
    fixed schedules (vp, ays_*, gits) ignore `model`. denoise < 1 computes int(steps / denoise) steps and keeps the
    last steps + 1 levels (the low-noise end), as ComfyUI's KSampler and BasicScheduler do; denoise = 1 returns the
    whole schedule, which for ddim_uniform and beta can have a few more or fewer than `steps` steps.
    """
    spec = SCHEDULES[check_choice(name, SCHEDULES, "schedule")]
    steps = check_steps(steps)
    denoise = check_denoise(denoise)
    check_options(params, spec.params, f"schedule {name!r}")
    inputs = _schedule_inputs(name, spec, model, sigma_min, sigma_max)
    options = {**spec.params, **params}
    sigmas = spec.fn(steps if denoise == 1 else int(steps / denoise), **inputs, **options)
    if denoise < 1:
        sigmas = sigmas[-(steps + 1) :]
    sigmas = sigmas.to(device="cpu", dtype=torch.float32).contiguous()
    given = {bound: value for bound, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max)) if value is not None}
    return check_schedule_output(sigmas, repr(name), _suspects(spec, params, given, model))


def _suspects(spec, params, given_bounds, model):
    """The inputs a bad schedule most likely comes from: options changed from their defaults and noise bounds given,
    else every option and the model whose noise table or range was read."""
    changed = {**{k: v for k, v in params.items() if v != spec.params[k]}, **given_bounds}
    if changed:
        return changed
    reads_model = model is not None and (spec.needs_table or bool(spec.bounds))
    return {**{k: v for k, v in spec.params.items() if v is not None},
            **({"model": type(model).__name__} if reads_model else {})}


def _schedule_inputs(name, spec, model, sigma_min, sigma_max):
    """The model and/or noise bounds the schedule reads, with a clear error for a missing or unused one."""
    if spec.needs_table and model is None:
        raise ValueError(f"schedule {name!r} needs a model's noise table (model=...); a sigma range is not enough")
    given = {"sigma_min": sigma_min, "sigma_max": sigma_max}
    unused = [bound for bound, value in given.items() if value is not None and bound not in spec.bounds]
    if unused:
        raise ValueError(f"schedule {name!r} does not use {' or '.join(unused)}")
    if spec.needs_table:
        return {"model": model}
    inputs = {}
    for bound in spec.bounds:
        if given[bound] is not None:
            inputs[bound] = given[bound]
        elif model is not None:
            inputs[bound] = float(getattr(model, bound))
        else:
            raise ValueError(f"schedule {name!r} needs {bound}: pass {bound}= or model=")
    if spec.bounds == RANGE:
        inputs["sigma_min"], inputs["sigma_max"] = check_sigma_range(inputs["sigma_min"], inputs["sigma_max"])
    for bound in spec.bounds:
        inputs[bound] = check_positive(inputs[bound], bound)
    return inputs
