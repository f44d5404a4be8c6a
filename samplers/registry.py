"""The named samplers, each wrapped so bad sigmas or unknown options fail with a clear message."""
import functools
import inspect
from collections.abc import Callable

import torch

from ..schedules.validation import check_choice, check_options, check_sigmas
from . import discrete, dpm_solver, dpmpp, er_sde, euler, multistep, res_multistep, restart, sa_solver, seeds, unipc
from .common import SamplerSpec

CALL_ARGUMENTS = ("model", "x", "sigmas", "extra_args", "callback", "disable")

SAMPLER_SPECS: dict[str, SamplerSpec] = {
    **euler.SPECS, **multistep.SPECS, **discrete.SPECS, **dpm_solver.SPECS, **dpmpp.SPECS, **unipc.SPECS,
    **res_multistep.SPECS, **er_sde.SPECS, **seeds.SPECS, **sa_solver.SPECS, **restart.SPECS,
}


def sampler_options(name: str) -> dict:
    """The keyword options a sampler takes, with their defaults (noise_sampler included)."""
    fn = SAMPLER_SPECS[check_choice(name, SAMPLER_SPECS, "sampler")].fn
    return {option: parameter.default for option, parameter in inspect.signature(fn).parameters.items()
            if option not in CALL_ARGUMENTS and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)}


def _checked(name, fn):
    """The sampler with its inputs checked first: at least two finite, non-negative sigmas; known options."""

    @functools.wraps(fn)
    def sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
        checked = check_sigmas(sigmas)
        if checked.numel() < 2:
            raise ValueError(f"sigmas: a sampler needs at least 2 noise levels (where to start and where to stop), "
                             f"got {checked.numel()}")
        check_options(options, sampler_options(name), f"sampler {name!r}")
        return fn(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, **options)

    return sampler


# name -> fn(model, x, sigmas, extra_args=None, callback=None, disable=None, **options) -> x
SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {name: _checked(name, spec.fn) for name, spec in SAMPLER_SPECS.items()}
