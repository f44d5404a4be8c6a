"""UniPC, RES multistep, ER-SDE, SEEDS and SA-Solver: model calls, seeded noise, the callback, UniPC's end and the
plain-callable calling convention (their orders of accuracy: test_samplers_order.py). No ComfyUI here."""
import math

import pytest
import torch

from diffusion_blocks.devtools.gmm import GaussianMixture
from diffusion_blocks.samplers import er_sde, res_multistep, sa_solver, seeds, unipc

MODULES = (unipc, res_multistep, er_sde, seeds, sa_solver)
SPECS = {name: spec for module in MODULES for name, spec in module.SPECS.items()}
STOCHASTIC = sorted(name for name, spec in SPECS.items() if spec.stochastic)
SIGMA_MAX, SIGMA_END = 10.0, 0.1


def log_uniform(steps, final_zero=False):
    """sigmas evenly spaced in log from SIGMA_MAX to SIGMA_END (float64), optionally followed by 0."""
    sigmas = torch.exp(torch.linspace(math.log(SIGMA_MAX), math.log(SIGMA_END), steps + 1, dtype=torch.float64))
    return torch.cat([sigmas, sigmas.new_zeros(1)]) if final_zero else sigmas


def model_calls(name, steps):
    gmm = GaussianMixture(dim=4, seed=0)
    SPECS[name].fn(gmm, gmm.sample_prior(2, SIGMA_MAX), log_uniform(steps, final_zero=True))
    return gmm.calls


@pytest.mark.parametrize("name", sorted(SPECS))
def test_calls_per_step(name):
    assert abs(model_calls(name, 12) / 13 - SPECS[name].calls_per_step) <= 0.1 * SPECS[name].calls_per_step + 0.08


def run(name, x, seed, **options):
    gmm = GaussianMixture(dim=x.shape[1], seed=0)
    return SPECS[name].fn(gmm, x, log_uniform(6, final_zero=True), extra_args={"seed": seed}, **options)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_seeded_noise_is_reproducible_and_device_free(name):
    x = GaussianMixture(dim=6, seed=0).sample_prior(3, SIGMA_MAX)
    torch.manual_seed(123)
    first = run(name, x.clone(), seed=7)
    global_draw = torch.randn(1)
    torch.manual_seed(123)
    assert torch.equal(torch.randn(1), global_draw), "the sampler must not touch the global RNG"
    assert torch.equal(run(name, x.clone(), seed=7), first)
    assert (run(name, x.clone(), seed=8) - first).norm() > 1e-3 * first.norm()
    single = run(name, x.float(), seed=7)  # the noise is drawn on the CPU in float32 whatever x is
    assert single.dtype == torch.float32
    assert (single.double() - first).norm() <= 1e-4 * first.norm()


@pytest.mark.parametrize("name", STOCHASTIC)
def test_given_noise_sampler_is_used(name):
    x = GaussianMixture(dim=6, seed=0).sample_prior(3, SIGMA_MAX)
    silent = run(name, x.clone(), seed=7, noise_sampler=lambda sigma, sigma_next: torch.zeros_like(x))
    assert torch.allclose(silent, run(name, x.clone(), seed=7, s_noise=0.0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_callback_once_per_step_and_seed_stays_out_of_the_model(name):
    sigmas = log_uniform(5, final_zero=True)
    seen = []

    def model(x, sigma, **extra):
        assert set(extra) == {"cond"} and sigma.shape == (x.shape[0],)
        return x / (1 + sigma[:, None] ** 2)

    out = SPECS[name].fn(model, torch.ones(2, 3, dtype=torch.float64) * SIGMA_MAX, sigmas,
                         extra_args={"seed": 1, "cond": None}, callback=seen.append, disable=True)
    assert [info["i"] for info in seen] == list(range(len(sigmas) - 1))
    for i, info in enumerate(seen):
        assert set(info) == {"i", "x", "sigma", "sigma_hat", "denoised"}
        assert float(info["sigma"]) == float(sigmas[i]) and info["denoised"].shape == out.shape


@pytest.mark.parametrize("name", sorted(SPECS))
def test_plain_lambda_model(name):
    """Data N(0, I): D(x, sigma) = x / (1 + sigma^2), and the ODE carries x_T to x_T / sqrt(1 + sigma_T^2)."""
    x = torch.linspace(-2, 2, 8).reshape(2, 4) * SIGMA_MAX
    sigmas = torch.cat([torch.exp(torch.linspace(math.log(SIGMA_MAX), math.log(0.05), 21)), torch.zeros(1)])
    out = SPECS[name].fn(lambda x, sigma: x / (1 + sigma[:, None] ** 2), x, sigmas)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    if not SPECS[name].stochastic:
        exact = x / math.sqrt(1 + SIGMA_MAX**2)
        assert (out - exact).norm() <= 1e-2 * exact.norm()


class Recorder:
    """A denoiser that records every call and returns a fresh tensor each time: D = x / (1 + sigma^2) + calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, sigma):
        out = x / (1 + sigma[:, None] ** 2) + len(self.calls)
        self.calls.append((float(sigma[0]), out))
        return out


@pytest.mark.parametrize("name", ["uni_pc", "uni_pc_bh2"])
@pytest.mark.parametrize("steps", [1, 2, 3, 8])
def test_uni_pc_finishes_a_schedule_ending_in_0_with_the_denoising_jump(name, steps):
    """No step to 0.001: the last model call, at sigma_min, is the result (x = D(x, sigma_min)), one call per step."""
    sigmas = log_uniform(steps, final_zero=True)
    kept = sigmas.clone()
    model = Recorder()
    out = SPECS[name].fn(model, torch.ones(2, 3, dtype=torch.float64), sigmas)
    assert torch.equal(sigmas, kept)
    assert len(model.calls) == steps + 1
    assert model.calls[-1][0] == pytest.approx(SIGMA_END) and torch.equal(out, model.calls[-1][1])


@pytest.mark.parametrize("name", ["uni_pc", "uni_pc_bh2"])
def test_uni_pc_stops_at_the_last_sigma_without_a_model_call_there(name):
    """Leftover noise (no final 0): the last step is the predictor alone, and the model is not called at its end."""
    model = Recorder()
    out = SPECS[name].fn(model, torch.ones(2, 3, dtype=torch.float64), log_uniform(6))
    assert len(model.calls) == 6 and all(sigma > SIGMA_END * 1.5 for sigma, _ in model.calls)
    zero = SPECS[name].fn(lambda x, sigma: torch.zeros_like(x), torch.ones(1, 2, dtype=torch.float64), log_uniform(4))
    assert torch.allclose(zero, torch.full_like(zero, SIGMA_END / SIGMA_MAX))  # D = 0: x scales with sigma
    assert out.shape == (2, 3)


def test_sa_solver_default_sde_band_is_sd1_percent_20_to_80():
    """ComfyUI's default band: percent_to_sigma(0.2) and (0.8) of the SD1.x scaled-linear discrete schedule."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    log_sigmas = (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).log()

    def sigma_at(t):
        low = math.floor(t)
        return math.exp((1 - (t - low)) * log_sigmas[low] + (t - low) * log_sigmas[low + 1])

    assert sa_solver.SDE_SIGMA_MAX == pytest.approx(sigma_at(0.8 * 999), rel=1e-6)
    assert sa_solver.SDE_SIGMA_MIN == pytest.approx(sigma_at(0.2 * 999), rel=1e-6)


def test_sa_solver_eta_zero_is_the_ode():
    x = GaussianMixture(dim=4, seed=0).sample_prior(2, SIGMA_MAX)
    gmm = GaussianMixture(dim=4, seed=0)
    sigmas = log_uniform(8, final_zero=True)
    quiet = sa_solver.sa_solver(gmm, x.clone(), sigmas, eta=0.0, extra_args={"seed": 1})
    assert torch.equal(quiet, sa_solver.sa_solver(gmm, x.clone(), sigmas, eta=0.0, extra_args={"seed": 2}))
    assert torch.equal(quiet, sa_solver.sa_solver(gmm, x.clone(), sigmas, tau_func=lambda sigma: 0.0))
