"""Input checks shared by the schedules and the sigma arithmetic: every error names the input at fault."""

import math
import numbers

import torch


def check_steps(steps, name="steps"):
    """A whole number of steps, at least 1."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise ValueError(f"{name} must be a whole number, got {steps!r}")
    if steps < 1:
        raise ValueError(f"{name} must be at least 1, got {steps}")
    return int(steps)


def check_number(value, name):
    """A finite real number (not a bool), returned as a python float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_positive(value, name):
    """A finite number above zero."""
    value = check_number(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def check_sigma_range(sigma_min, sigma_max):
    """A noise range with 0 < sigma_min < sigma_max, both finite."""
    sigma_min = check_positive(sigma_min, "sigma_min")
    sigma_max = check_positive(sigma_max, "sigma_max")
    if sigma_min >= sigma_max:
        raise ValueError(f"sigma_min ({sigma_min}) must be below sigma_max ({sigma_max})")
    return sigma_min, sigma_max


def check_denoise(denoise, name="denoise"):
    """The fraction of the schedule to run: 0 < denoise <= 1."""
    denoise = check_number(denoise, name)
    if not 0 < denoise <= 1:
        raise ValueError(f"{name} must satisfy 0 < {name} <= 1, got {denoise}")
    return denoise


def check_fraction(value, name):
    """A number in [0, 1]."""
    value = check_number(value, name)
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return value


def check_choice(value, options, name):
    """One of a fixed set of names; the error lists them."""
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(sorted(options))}")
    return value


def check_options(given, allowed, owner):
    """No option outside `allowed`; the error names the option and lists the valid ones."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        valid = ", ".join(sorted(allowed)) or "none"
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for {owner}; valid: {valid}")


def check_sigmas(sigmas, name="sigmas"):
    """A non-empty 1-D list of finite, non-negative noise levels, returned as a float32 CPU tensor."""
    try:
        sigmas = torch.as_tensor(sigmas).detach()
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{name} must be a 1-D list of numbers: {error}") from None
    if sigmas.ndim != 1 or sigmas.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor, got shape {tuple(sigmas.shape)}")
    if sigmas.dtype == torch.bool or sigmas.is_complex():
        raise ValueError(f"{name} must hold real numbers, got {sigmas.dtype}")
    sigmas = sigmas.to(device="cpu", dtype=torch.float32)
    if not torch.isfinite(sigmas).all():
        raise ValueError(f"{name} must be finite (no NaN or infinity)")
    if (sigmas < 0).any():
        raise ValueError(f"{name} must not be negative")
    return sigmas


def check_descending(sigmas, name="sigmas"):
    """Noise levels that strictly decrease, as a sampling schedule does."""
    if (sigmas[1:] >= sigmas[:-1]).any():
        raise ValueError(f"{name} must be strictly descending, got {sigmas.tolist()}")
    return sigmas


def check_schedule_output(sigmas, schedule, suspects):
    """A schedule's own output as it promises it: finite, non-negative, never rising. `suspects` maps the inputs that
    most likely caused a failure to their values; the error names them."""
    culprits = ", ".join(suspects) or "steps"
    given = ", ".join(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
                      for name, value in suspects.items())
    at = f" with {given}" if given else ""
    if not torch.isfinite(sigmas).all():
        kind = "infinite" if not torch.isnan(sigmas).any() else "NaN"
        raise ValueError(f"{culprits}: the {schedule} schedule gives {kind} noise levels{at} (the numbers overflow); "
                         f"use smaller values")
    if (sigmas < 0).any():
        raise ValueError(f"{culprits}: the {schedule} schedule gives negative noise levels{at}")
    rising = torch.nonzero(sigmas[1:] > sigmas[:-1]).flatten()
    if rising.numel():
        k = int(rising[0])
        raise ValueError(f"{culprits}: the {schedule} schedule rises from {float(sigmas[k]):g} to "
                         f"{float(sigmas[k + 1]):g} at step {k + 1}{at}; a schedule must descend")
    return sigmas
