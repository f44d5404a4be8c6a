"""The sampler registry: every sampler runs through one checked entry point with clear errors."""
import math

import pytest
import torch

from diffusion_blocks.devtools.gmm import GaussianMixture
from diffusion_blocks.samplers import SAMPLER_SPECS, SAMPLERS, sampler_options
from diffusion_blocks.schedules import get_sigmas

SIGMAS = get_sigmas("karras", 8, sigma_min=0.03, sigma_max=10.0)


def plain_denoiser():
    mixture = GaussianMixture(dim=6, seed=3)
    return lambda x, sigma: mixture(x, sigma)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_runs_a_plain_callable_and_reports_every_step(name):
    x = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * SIGMAS[0].item()
    steps = []
    result = SAMPLERS[name](plain_denoiser(), x, SIGMAS.double(), extra_args={"seed": 5}, callback=steps.append)
    assert result.shape == x.shape and torch.isfinite(result).all()
    assert steps and all({"i", "x", "sigma", "sigma_hat", "denoised"} <= set(step) for step in steps)
    spec = SAMPLER_SPECS[name]
    assert spec.summary and spec.calls_per_step >= 1 and spec.order >= 0


@pytest.mark.parametrize("sigmas, message", [
    (torch.tensor([]), "sigmas"),
    (torch.tensor([14.6]), "at least 2"),
    (torch.tensor([14.6, math.nan, 0.0]), "finite"),
    (torch.tensor([[14.6, 0.0]]), "1-D"),
    (torch.tensor([14.6, -1.0]), "negative"),
])
def test_bad_sigmas_are_named(sigmas, message):
    with pytest.raises(ValueError, match=message):
        SAMPLERS["euler"](plain_denoiser(), torch.zeros(1, 6), sigmas)


def test_unknown_options_are_named_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown option\(s\) etta .*valid: .*eta"):
        SAMPLERS["euler_ancestral"](plain_denoiser(), torch.zeros(1, 6), SIGMAS, etta=0.5)


def test_options_are_read_from_the_samplers_themselves():
    assert sampler_options("euler_ancestral") == {"eta": 1.0, "s_noise": 1.0, "noise_sampler": None}
    assert sampler_options("dpmpp_2m") == {}
    with pytest.raises(ValueError, match="unknown sampler 'eulr'"):
        sampler_options("eulr")
