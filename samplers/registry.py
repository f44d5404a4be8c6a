"""The named samplers, each wrapped so bad sigmas or unknown options fail with a clear message.

Every sampler takes noise_model="ve" (default) or "flow" (a rectified-flow model: SD3, FLUX, AuraFlow, Wan; see
noise_model.py): the host says which model it runs. Samplers that add fresh noise take it themselves. The others
integrate the probability-flow ODE alone, which is the same for both, so they run unchanged; the noise that some of
them can add (dpm_fast's and dpm_adaptive's eta) is written for VE only and refused on a flow model.
"""
import functools
import inspect
from collections.abc import Callable

import torch

from ..schedules.validation import check_choice, check_options, check_sigmas
from . import discrete, dpm_solver, dpmpp, er_sde, euler, multistep, res_multistep, restart, sa_solver, seeds, unipc
from .common import SamplerSpec
from .noise_model import noise_model_of, refuse_flow

# What the host passes, as opposed to a user's options (noise_model: what kind of model runs).
CALL_ARGUMENTS = ("model", "x", "sigmas", "extra_args", "callback", "disable", "noise_model")

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
    """The sampler with its inputs checked first: at least two finite, non-negative sigmas (at most 1 on a flow
    model); known options; noise_model passed on where the sampler takes it."""
    takes_noise_model = "noise_model" in inspect.signature(fn).parameters

    @functools.wraps(fn)
    def sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_model="ve", **options):
        checked = check_sigmas(sigmas)
        if checked.numel() < 2:
            raise ValueError(f"sigmas: a sampler needs at least 2 noise levels (where to start and where to stop), "
                             f"got {checked.numel()}")
        check_options(options, sampler_options(name), f"sampler {name!r}")
        noise_model = noise_model_of(noise_model)
        if noise_model.flow:
            if float(checked.max()) > 1:
                raise ValueError(f"sigmas: a rectified-flow model's noise levels lie in [0, 1] (1 is pure noise), "
                                 f"got up to {float(checked.max()):g}; take the schedule from this model")
            if not takes_noise_model and options.get("eta", sampler_options(name).get("eta", 0)):
                refuse_flow(name, "eta > 0 (its ancestral noise, written for VE models)", "use eta = 0")
        if takes_noise_model:
            options["noise_model"] = noise_model
        return fn(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, **options)

    return sampler


# name -> fn(model, x, sigmas, extra_args=None, callback=None, disable=None, **options) -> x
SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {name: _checked(name, spec.fn) for name, spec in SAMPLER_SPECS.items()}
