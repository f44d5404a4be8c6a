"""DPM-Solver and DPM-Solver++ samplers on an exact problem: adaptive tolerances, special cases, seeds, callbacks,
edge cases (their orders of accuracy: test_samplers_order.py)."""
import inspect
import math

import pytest
import torch

from diffusion_blocks.devtools.gmm import GaussianMixture, reference_solution
from diffusion_blocks.samplers import dpm_solver, dpmpp, exponential

SIGMA_MAX, SIGMA_MIN = 10.0, 0.1
BATCH, DIM = 4, 8
SPECS = {**dpm_solver.SPECS, **dpmpp.SPECS}


def log_uniform(steps, sigma_max=SIGMA_MAX, sigma_min=SIGMA_MIN, dtype=torch.float64):
    """sigma_max .. sigma_min, uniform in log sigma, no final 0."""
    return torch.linspace(math.log(sigma_max), math.log(sigma_min), steps + 1, dtype=dtype).exp()


def with_zero(sigmas):
    return torch.cat([sigmas, sigmas.new_zeros(1)])


@pytest.fixture(scope="module")
def problem():
    """Gaussian-mixture data, a start x at SIGMA_MAX and the ODE solution at SIGMA_MIN (RK4, 200 steps)."""
    gmm = GaussianMixture(dim=DIM)
    x = gmm.sample_prior(BATCH, SIGMA_MAX, seed=2)
    return gmm, x, reference_solution(gmm, x, SIGMA_MAX, SIGMA_MIN, steps=200)  # RK4 error ~1e-8, errors here > 1e-5


@pytest.mark.parametrize("order", [2, 3])
def test_dpm_adaptive_error_follows_its_tolerance(problem, order):
    gmm, x, exact = problem
    errors, calls = [], []
    for rtol in (0.05, 0.005, 0.0005):
        gmm.calls = 0
        result = dpm_solver.dpm_adaptive(gmm, x.clone(), log_uniform(10), order=order, rtol=rtol, atol=rtol / 10)
        errors.append((result - exact).norm().item() / exact.norm().item())
        calls.append(gmm.calls)
    assert errors[2] < errors[1] < errors[0]
    assert calls[0] < calls[1] < calls[2]
    assert errors[2] < 1e-3


def test_deterministic_special_cases_agree(problem):
    """eta = 0 turns the SDE solvers into their ODE forms: 2M-SDE midpoint is 2M, and SDE with r = 1/2 is 2S."""
    gmm, x, _ = problem
    sigmas = with_zero(log_uniform(12))
    torch.testing.assert_close(dpmpp.dpmpp_2m_sde(gmm, x.clone(), sigmas, eta=0.0),
                               dpmpp.dpmpp_2m(gmm, x.clone(), sigmas), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dpmpp.dpmpp_sde(gmm, x.clone(), sigmas, eta=0.0),
                               dpmpp.dpmpp_2s_ancestral(gmm, x.clone(), sigmas, eta=0.0), rtol=1e-12, atol=1e-12)


# --- seeds and noise -------------------------------------------------------------------------------------------

STOCHASTIC = [
    ("dpmpp_2s_ancestral", {}),
    ("dpmpp_sde", {}),
    ("dpmpp_2m_sde", {}),
    ("dpmpp_2m_sde", {"solver_type": "heun"}),
    ("dpmpp_3m_sde", {}),
    ("dpm_fast", {"eta": 1.0}),
    ("dpm_adaptive", {"eta": 1.0}),
]


def seen_seed_model(gmm):
    """The Gaussian-mixture denoiser, refusing the seed: samplers must keep it from the model."""

    def model(x, sigma, **extra_args):
        assert "seed" not in extra_args
        return gmm(x, sigma)

    return model


@pytest.mark.parametrize("name,options", STOCHASTIC, ids=[f"{n}-{o}" for n, o in STOCHASTIC])
def test_seeded_noise_is_reproducible_and_dtype_independent(name, options):
    gmm = GaussianMixture(dim=DIM)
    sigmas = with_zero(log_uniform(8, sigma_min=0.05)).float()
    x = gmm.sample_prior(BATCH, SIGMA_MAX, seed=5)
    fn, model = SPECS[name].fn, seen_seed_model(gmm)

    def run(seed, dtype=torch.float64):
        return fn(model, x.clone().to(dtype), sigmas, extra_args={"seed": seed}, **options)

    first, again, other = run(7), run(7), run(8)
    assert torch.equal(first, again)
    assert (first - other).norm() > 0.01 * first.norm()
    # float32 and float64 paths draw the same noise (CPU float32 generator), so they differ only by rounding
    single = run(7, torch.float32)
    assert single.dtype == torch.float32
    assert (single.double() - first).norm() < 1e-4 * first.norm()


def test_injected_noise_sampler_is_used_and_default_seed_is_zero():
    gmm = GaussianMixture(dim=DIM)
    sigmas = with_zero(log_uniform(6))
    x = gmm.sample_prior(BATCH, SIGMA_MAX, seed=5)
    calls = []

    def zeros(sigma, sigma_next):
        calls.append((float(sigma), float(sigma_next)))
        return torch.zeros_like(x)

    for name, options in STOCHASTIC:
        calls.clear()
        fn = SPECS[name].fn
        quiet = fn(gmm, x.clone(), sigmas, noise_sampler=zeros, **options)
        assert calls, name
        assert all(a >= b for a, b in calls), name
        assert torch.isfinite(quiet).all(), name
        torch.testing.assert_close(fn(gmm, x.clone(), sigmas, **options),
                                   fn(gmm, x.clone(), sigmas, extra_args={"seed": 0}, **options), rtol=0, atol=0)


# --- callback, plain models, edge cases ------------------------------------------------------------------------

def expected_reports(name, sigmas):
    if name == "dpm_fast":
        return len(dpm_solver.fast_step_orders(len(sigmas) - 1))
    if name == "dpm_adaptive":
        return None  # one per accepted step: set by the tolerances
    return len(sigmas) - 1


@pytest.mark.parametrize("name", sorted(SPECS))
def test_callback_once_per_step_with_the_documented_keys(name):
    gmm = GaussianMixture(dim=DIM)
    sigmas = with_zero(log_uniform(9))
    x = gmm.sample_prior(BATCH, SIGMA_MAX, seed=5)
    reports = []
    SPECS[name].fn(gmm, x, sigmas, callback=reports.append, disable=True)
    expected = expected_reports(name, sigmas)
    assert len(reports) == expected if expected is not None else len(reports) > 3
    steps = [r["i"] for r in reports]
    if name == "dpm_adaptive":  # progress in the schedule's steps (tests/unit/test_budgets.py pins it exactly)
        assert steps[0] == 0 and steps == sorted(steps) and steps[-1] <= len(sigmas) - 2
    else:
        assert steps == list(range(len(reports)))
    for report in reports:
        assert set(report) == {"i", "x", "sigma", "sigma_hat", "denoised"}
        assert report["x"].shape == x.shape and report["denoised"].shape == x.shape
    levels = [float(r["sigma"]) for r in reports]
    assert levels == sorted(levels, reverse=True) and levels[0] == pytest.approx(SIGMA_MAX)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_plain_lambda_model(name):
    """Data N(0, I): D(x, sigma) = x / (1 + sigma^2), and the ODE carries x_T to x_T sqrt((1 + s^2) / (1 + T^2))."""
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * SIGMA_MAX
    sigmas = log_uniform(30, dtype=torch.float32)
    options = {"eta": 0.0} if "eta" in inspect.signature(SPECS[name].fn).parameters else {}
    if name == "dpm_adaptive":
        options.update(rtol=1e-3, atol=1e-4)  # its defaults (rtol 0.05) aim at images, not at 1e-2 here
    result = SPECS[name].fn(lambda x, sigma: x / (1 + sigma[:, None, None, None] ** 2), x, sigmas, **options)
    exact = x * math.sqrt((1 + SIGMA_MIN**2) / (1 + SIGMA_MAX**2))
    assert result.shape == x.shape and result.dtype == torch.float32
    assert (result - exact).norm() < 1e-2 * exact.norm()


@pytest.mark.parametrize("name", sorted(dpmpp.SPECS))
def test_last_step_to_zero_lands_on_the_denoised_estimate(name):
    gmm = GaussianMixture(dim=DIM)
    sigmas = with_zero(log_uniform(6))
    x = gmm.sample_prior(BATCH, SIGMA_MAX, seed=5)
    reports = []
    result = SPECS[name].fn(gmm, x, sigmas, callback=reports.append)
    torch.testing.assert_close(result, reports[-1]["denoised"], rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_model_calls_per_step(name):
    gmm = GaussianMixture(dim=DIM)
    sigmas = log_uniform(12)
    SPECS[name].fn(gmm, gmm.sample_prior(BATCH, SIGMA_MAX), sigmas)
    if name == "dpm_adaptive":
        assert gmm.calls > 0  # set by its tolerances; about 3 per accepted step (order 3)
    else:
        assert gmm.calls == SPECS[name].calls_per_step * (len(sigmas) - 1)


def test_dpm_solvers_use_only_the_end_points():
    gmm = GaussianMixture(dim=DIM)
    x = gmm.sample_prior(BATCH, SIGMA_MAX)
    even = with_zero(log_uniform(10))
    bent = even.clone()
    bent[1:-2] = bent[1:-2] ** 1.3  # interior moved, same first and last nonzero sigma, same length
    for fn in (dpm_solver.dpm_fast, dpm_solver.dpm_adaptive):
        torch.testing.assert_close(fn(gmm, x.clone(), even), fn(gmm, x.clone(), bent), rtol=0, atol=0)
    # sigmas ending in 0 stop at the last nonzero sigma, as ComfyUI's wrappers do
    torch.testing.assert_close(dpm_solver.dpm_adaptive(gmm, x.clone(), even),
                               dpm_solver.dpm_adaptive(gmm, x.clone(), even[:-1]), rtol=0, atol=0)


def test_dpm_solvers_run_backwards_to_higher_noise():
    """With eta = 0 the ODE solvers also integrate from low to high noise (inversion)."""
    gmm = GaussianMixture(dim=DIM)
    x = gmm.sample_prior(BATCH, SIGMA_MAX)
    down = dpm_solver.dpm_adaptive(gmm, x.clone(), log_uniform(10), rtol=1e-4, atol=1e-5)
    up = dpm_solver.dpm_adaptive(gmm, down, log_uniform(10).flip(0), rtol=1e-4, atol=1e-5)
    assert (up - x).norm() < 1e-3 * x.norm()
    with pytest.raises(ValueError):
        dpm_solver.dpm_fast(gmm, x, log_uniform(10).flip(0), eta=0.5)
    with pytest.raises(ValueError):
        dpm_solver.dpm_adaptive(gmm, x, log_uniform(10).flip(0), eta=0.5)


def test_edge_cases():
    gmm = GaussianMixture(dim=DIM)
    x = gmm.sample_prior(BATCH, SIGMA_MAX)
    for fn in SPECS.values():
        assert fn.fn(gmm, x, x.new_tensor([SIGMA_MAX])) is x
    with pytest.raises(ValueError):
        dpm_solver.dpm_adaptive(gmm, x, log_uniform(4), order=1)
    with pytest.raises(ValueError):
        dpmpp.dpmpp_2m_sde(gmm, x, log_uniform(4), solver_type="rk4")
    with pytest.raises(ValueError):
        dpm_solver.dpm_fast(gmm, x, x.new_tensor([SIGMA_MAX, 0.0, 0.0]))
    # one step to 0: the first and last nonzero sigma coincide, nothing to integrate
    assert torch.equal(dpm_solver.dpm_fast(gmm, x, x.new_tensor([SIGMA_MAX, 0.0])), x)


def test_exponential_integrator_maths_on_numbers_and_tensors():
    """h phi_k(h) = h sum_j h^j / (j + k)! (Hochbruck & Ostermann 2010), and lambda = -log(sigma) both ways."""
    for h in (-2.0, -0.3, 0.5, 1.7):
        for k in (1, 2, 3, 4):
            series = h * sum(h**j / math.factorial(j + k) for j in range(40))
            assert exponential.h_phi(k, h) == pytest.approx(series, rel=1e-12)
            assert float(exponential.h_phi(k, torch.tensor(h, dtype=torch.float64))) == pytest.approx(series, rel=1e-12)
    assert exponential.sde_noise_std(0.4) == pytest.approx((1 - math.exp(-0.8)) ** 0.5, rel=1e-14)
    sigmas = torch.tensor([14.6, 1.0, 0.03], dtype=torch.float64)
    torch.testing.assert_close(exponential.sigma_of(exponential.lambda_of(sigmas)), sigmas, rtol=1e-15, atol=0)
    assert exponential.lambda_of(0.5) == pytest.approx(math.log(2)) and exponential.sigma_of(math.log(2)) == 0.5
