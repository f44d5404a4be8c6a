"""Samplers on rectified-flow models (noise_model="flow", x = (1 - sigma) x0 + sigma eps), without ComfyUI: the
noise model's maths, the registry's checks, and exact answers (parity with ComfyUI: tests/in_comfy/
test_samplers_flow_parity.py)."""
import math

import pytest
import torch

from diffusion_blocks.devtools.gmm import GaussianMixture, reference_solution
from diffusion_blocks.samplers import SAMPLERS, NoiseModel
from diffusion_blocks.samplers.common import ancestral_step
from diffusion_blocks.samplers.noise_model import FLOW, VE, noise_model_of

FLOW_SIGMAS = torch.tensor([1.0, 0.96, 0.92, 0.87, 0.82, 0.75, 0.67, 0.56, 0.43, 0.25, 0.0], dtype=torch.float64)


def test_log_snr_and_noise_to_signal_ratio_invert():
    for model in (VE, FLOW):
        for sigma in (0.01, 0.3, 0.5, 0.97):
            assert model.sigma_of(model.lambda_of(sigma)) == pytest.approx(sigma, rel=1e-12)
            assert model.from_ratio(model.ratio(sigma)) == pytest.approx(sigma, rel=1e-12)
            assert math.exp(-model.lambda_of(sigma)) == pytest.approx(model.ratio(sigma), rel=1e-12)
            t = torch.tensor(sigma, dtype=torch.float64)
            assert float(model.sigma_of(model.lambda_of(t))) == pytest.approx(sigma, rel=1e-12)
    assert FLOW.lambda_of(0.5) == 0.0 and FLOW.sigma_of(-800.0) == 1.0 and FLOW.sigma_of(800.0) == 0.0


@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0, 2.5])
def test_flow_ancestral_step_lands_on_the_path(eta):
    """alpha_next = scale alpha_down and sigma_next^2 = (scale sigma_down)^2 + sigma_up^2, sigma_down <= sigma_next."""
    for sigma, sigma_next in ((1.0, 0.9), (0.9, 0.6), (0.4, 0.05), (0.3, 0.0)):
        down, up, scale = FLOW.ancestral_step(sigma, sigma_next, eta)
        assert 0 <= down <= sigma_next and up >= 0
        assert scale * (1 - down) == pytest.approx(1 - sigma_next, rel=1e-12)
        assert (scale * down) ** 2 + up**2 == pytest.approx(sigma_next**2, rel=1e-12, abs=1e-15)
        if eta == 1.0 and sigma_next > 0:
            assert down == pytest.approx(sigma_next**2 / sigma, rel=1e-12)  # ComfyUI's RF split
    assert VE.ancestral_step(5.0, 2.0, eta) == (*ancestral_step(5.0, 2.0, eta), 1.0)


def test_raise_noise_is_the_forward_process():
    """Point-mass data mu: from the path at sigma to the path at sigma_to > sigma, exactly."""
    mu, z = 3.0, torch.randn(200000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fresh = torch.randn(200000, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for model, sigma, sigma_to in ((FLOW, 0.2, 0.7), (VE, 0.5, 3.0)):
        x = model.raise_noise(model.alpha(sigma) * mu + sigma * z, sigma, sigma_to, fresh)
        assert float(x.mean()) == pytest.approx(model.alpha(sigma_to) * mu, abs=5 * sigma_to / 200000**0.5)
        assert float(x.std()) == pytest.approx(sigma_to, rel=1e-2)


def test_noise_model_names_are_checked():
    assert noise_model_of("flow") is FLOW and noise_model_of(VE) is VE
    with pytest.raises(ValueError, match="noise_model: expected 've' .* or 'flow' .*, got 'vp'"):
        noise_model_of("vp")
    with pytest.raises(ValueError, match="sigma_top must lie strictly between 0 and 1"):
        NoiseModel("flow", sigma_top=1.0)
    with pytest.raises(ValueError, match="noise_model"):
        SAMPLERS["euler"](lambda x, s: x, torch.zeros(1, 2), FLOW_SIGMAS, noise_model="rf")


def test_the_registry_checks_flow_inputs():
    model = lambda x, sigma: torch.zeros_like(x)  # noqa: E731
    with pytest.raises(ValueError, match=r"sigmas: a rectified-flow model's noise levels lie in \[0, 1\]"):
        SAMPLERS["euler"](model, torch.zeros(1, 2), torch.tensor([14.6, 1.0, 0.0]), noise_model="flow")
    for name in ("dpm_fast", "dpm_adaptive"):
        with pytest.raises(ValueError, match=f"{name}: eta > 0 .* does not support rectified-flow models.*eta = 0"):
            SAMPLERS[name](model, torch.zeros(1, 2), FLOW_SIGMAS, noise_model="flow", eta=0.5)
    assert torch.isfinite(SAMPLERS["dpm_fast"](model, torch.ones(1, 2), FLOW_SIGMAS, noise_model="flow")).all()


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_ends_on_the_flows_path(name):
    """Point-mass data mu: at sigma a flow model's sample is exactly (1 - sigma) mu + sigma z, and every sampler, its
    ODE steps exact for a constant D and its fresh noise keeping the marginal, must end there (leftover noise 0.43)."""
    mu, sigmas = 2.0, FLOW_SIGMAS[:9]
    x = torch.randn(1, 20000, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    out = SAMPLERS[name](lambda x, sigma: torch.full_like(x, mu), x, sigmas, extra_args={"seed": 5}, noise_model="flow")
    sigma_end = float(sigmas[-1])
    z = (out - (1 - sigma_end) * mu) / sigma_end
    assert abs(float(z.mean())) * z.numel() ** 0.5 < 5 and abs(float(z.std()) - 1) < 0.03, name


def flow_mixture(gmm):
    """The mixture as a flow model sees it: x = (1 - s) x0 + s eps is x / (1 - s) at VE noise s / (1 - s)."""
    return lambda x, sigma, **_: gmm(x / (1 - sigma[:, None]), sigma / (1 - sigma))


@pytest.fixture(scope="module")
def flow_problem():
    """A mixture as a flow model, start points at sigma 0.9 and the exact ODE solution at 0.1: the VE one (fine RK4)
    scaled by 1 - sigma, since the flow's probability-flow ODE dx/dsigma = (x - D) / sigma is the VE one's."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    gmm = GaussianMixture(dim=4, seed=0)
    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    exact = 0.9 * reference_solution(gmm, x / 0.1, 0.9 / 0.1, 0.1 / 0.9, steps=500)
    yield flow_mixture(gmm), x, exact
    torch.set_num_threads(previous)


# ODE samplers as they are, and the log-SNR SDE samplers' flow formulas with their noise off
CONVERGENCE_CASES = [("euler", {}), ("lms", {}), ("dpmpp_2m", {}), ("uni_pc", {}), ("dpmpp_2m_sde", {"eta": 0.0}),
                     ("dpmpp_3m_sde", {"eta": 0.0}), ("dpmpp_sde", {"eta": 0.0}), ("seeds_2", {"eta": 0.0}),
                     ("sa_solver", {"eta": 0.0}), ("er_sde", {"noise_scaler": lambda lam: lam})]


@pytest.mark.parametrize("name,options", CONVERGENCE_CASES, ids=[c[0] for c in CONVERGENCE_CASES])
def test_ode_samplers_converge_to_the_flows_exact_solution(flow_problem, name, options):
    model, x, exact = flow_problem
    errors = []
    for steps in (24, 48):
        out = SAMPLERS[name](model, x.clone(), torch.linspace(0.9, 0.1, steps + 1, dtype=torch.float64),
                             noise_model="flow", **options)
        errors.append(float((out - exact).norm() / exact.norm()))
    assert errors[1] < 1e-2 and errors[1] < errors[0] / 1.8, f"{name}: errors {errors} at 24 and 48 steps"
