"""Sigma arithmetic: split, join, flip, scale, resample and parse sampling schedules (1-D float32 CPU tensors)."""

import math
import numbers
import re

import numpy
import torch

from .validation import (
    check_descending,
    check_fraction,
    check_number,
    check_positive,
    check_sigmas,
    check_steps,
)

FLIPPED_ZERO_SIGMA = 1e-4  # what a leading 0 becomes after flip: an unsampler's first step cannot start from sigma 0


def split_at_step(sigmas, step):
    """(high, low): the schedule before and after `step`; both hold sigmas[step], so concat(high, low) restores it."""
    sigmas = check_sigmas(sigmas)
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or not 0 <= step < len(sigmas):
        raise ValueError(f"step must be a whole number from 0 to {len(sigmas) - 1}, got {step!r}")
    step = int(step)
    return sigmas[: step + 1].clone(), sigmas[step:].clone()


def split_at_denoise(sigmas, denoise):
    """(high, low) where low holds the last round(denoise * steps) steps, as an img2img pass of strength denoise."""
    sigmas = check_sigmas(sigmas)
    denoise = check_fraction(denoise, "denoise")
    steps = len(sigmas) - 1
    return split_at_step(sigmas, steps - round(steps * denoise))


def concat(high, low):
    """`high` then `low`; a joint value present at the end of high and the start of low is kept once."""
    high, low = check_sigmas(high, "high"), check_sigmas(low, "low")
    if high[-1] == low[0]:
        low = low[1:]
    return torch.cat([high, low])


def flip(sigmas):
    """The schedule reversed (ascending), for unsampling: a first sigma of 0 becomes FLIPPED_ZERO_SIGMA."""
    sigmas = check_sigmas(sigmas).flip(0)
    if sigmas[0] == 0:
        sigmas[0] = FLIPPED_ZERO_SIGMA
    return sigmas


def set_first(sigmas, value):
    """The schedule with its first noise level replaced by `value`."""
    value = check_number(value, "value")
    if value < 0:
        raise ValueError(f"value must not be negative, got {value}")
    sigmas = check_sigmas(sigmas).clone()
    sigmas[0] = value
    return sigmas


def multiply(sigmas, factor):
    """Every noise level times `factor` (> 0)."""
    return check_sigmas(sigmas) * check_positive(factor, "factor")


def resample(sigmas, steps):
    """The same descending schedule with `steps` steps: log-linear interpolation over the step index, a final 0 kept."""
    sigmas = check_descending(check_sigmas(sigmas))
    steps = check_steps(steps)
    if sigmas[-1] > 0:
        return loglinear_interpolate(sigmas, steps + 1)
    if len(sigmas) < 3:
        raise ValueError("sigmas needs at least two non-zero noise levels to resample")
    return torch.cat([loglinear_interpolate(sigmas[:-1], steps), sigmas.new_zeros(1)])


def loglinear_interpolate(levels, count):
    """`count` noise levels spread evenly over the index of `levels`, interpolating log sigma (Sabour et al. 2024)."""
    log_levels = numpy.log(numpy.asarray(levels, dtype=numpy.float64))
    positions = numpy.linspace(0, 1, len(log_levels))
    wanted = numpy.linspace(0, 1, count)
    return torch.from_numpy(numpy.exp(numpy.interp(wanted, positions, log_levels))).float()


def insert_intermediate(sigmas, count):
    """`count` extra levels inside every step: geometric means between non-zero levels, evenly spaced towards 0."""
    sigmas = check_sigmas(sigmas).tolist()
    count = check_steps(count, "count")
    result = []
    for current, following in zip(sigmas[:-1], sigmas[1:]):
        result.append(current)
        for k in range(1, count + 1):
            w = k / (count + 1)
            if current > 0 and following > 0:
                result.append(math.exp((1 - w) * math.log(current) + w * math.log(following)))
            else:
                result.append((1 - w) * current + w * following)
    result.append(sigmas[-1])
    return torch.tensor(result, dtype=torch.float32)


def parse_sigmas(text):
    """A schedule typed as text: numbers split by commas and/or spaces, optionally in [ ], strictly descending."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a string of numbers, got {type(text).__name__}")
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    tokens = [token for token in re.split(r"[\s,]+", body) if token]
    values = []
    for token in tokens:
        try:
            values.append(float(token))
        except ValueError:
            raise ValueError(f"text holds {token!r}, which is not a number") from None
    if len(values) < 2:
        raise ValueError(f"text must list at least two noise levels (one step), got {len(values)}")
    return check_descending(check_sigmas(values, "text"), "text")
