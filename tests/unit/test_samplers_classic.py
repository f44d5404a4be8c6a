"""The classic samplers on an exact problem: the closed forms they reduce to, seeded noise, callbacks and the
plain-callable contract (their orders of accuracy: test_samplers_order.py). No ComfyUI here."""
import math

import pytest
import torch

from diffusion_blocks.devtools.gmm import GaussianMixture
from diffusion_blocks.samplers import discrete, euler, multistep, restart

SPECS = {**euler.SPECS, **multistep.SPECS, **discrete.SPECS, **restart.SPECS}
SIGMA_MAX, SIGMA_MIN = 80.0, 0.1


def log_uniform(steps, sigma_max=SIGMA_MAX, sigma_min=SIGMA_MIN):
    """Noise levels evenly spaced in log sigma, ending at a small positive sigma (no final step to 0)."""
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps + 1, dtype=torch.float64))


# --- the weights of the multistep methods --------------------------------------------------------------------


def test_gauss_legendre_is_exact_to_degree_2n_minus_1():
    for points in (1, 2, 5, 8):
        nodes, weights = multistep.gauss_legendre(points)
        for degree in range(2 * points):
            exact = (1 - (-1) ** (degree + 1)) / (degree + 1)
            assert sum(w * t**degree for t, w in zip(nodes, weights)) == pytest.approx(exact, abs=1e-13)


def test_lagrange_integrals_integrate_polynomials_through_the_nodes_exactly():
    nodes, a, b = [2.0, 2.7, 3.9, 5.5], 2.0, 1.1  # a step down from the newest node, uneven history
    weights = multistep.lagrange_integrals(nodes, a, b)
    for degree in range(len(nodes)):
        exact = (b ** (degree + 1) - a ** (degree + 1)) / (degree + 1)
        assert sum(w * t**degree for t, w in zip(nodes, weights)) == pytest.approx(exact, rel=1e-12)


def test_fixed_step_adams_bashforth_weights():
    tables = [[1], [3 / 2, -1 / 2], [23 / 12, -16 / 12, 5 / 12], [55 / 24, -59 / 24, 37 / 24, -9 / 24]]
    for n, table in enumerate(tables, start=1):
        assert multistep.lagrange_integrals([-k for k in range(n)], 0.0, 1.0) == pytest.approx(table, abs=1e-13)


def test_deis_time_map_and_weights_match_the_papers_integral_in_t():
    """DEIS writes the weight as the integral over t of L_j(t) d sigma/dt (the VP-SDE's exponential integrator in
    the sigma variables); ours integrates L_j(t(sigma)) over sigma. Compare with a fine trapezoid rule in t."""
    t_of = multistep.vp_time()
    assert t_of(80.0) == pytest.approx(1.0, rel=1e-12) and t_of(0.002) == pytest.approx(1e-3, rel=1e-9)
    log_max, log_min, eps_s = math.log1p(80.0**2), math.log1p(0.002**2), 1e-3
    beta_d = 2 * (log_min / eps_s - log_max) / (eps_s - 1)
    beta_min = log_max - beta_d / 2
    sigma_of = lambda t: torch.sqrt(torch.expm1(beta_d * t**2 / 2 + beta_min * t))  # noqa: E731
    sigmas = [14.6, 9.7, 6.2, 3.9, 2.3]
    t_nodes = [t_of(s) for s in sigmas[:4]]
    ours = multistep.lagrange_integrals(t_nodes[::-1], sigmas[3], sigmas[4], t_of, 16)
    t = torch.linspace(t_of(sigmas[3]), t_of(sigmas[4]), 200001, dtype=torch.float64)
    dsigma_dt = torch.gradient(sigma_of(t), spacing=(t,))[0]
    for j, t_j in enumerate(t_nodes[::-1]):
        basis = torch.ones_like(t)
        for k, t_k in enumerate(t_nodes[::-1]):
            if k != j:
                basis = basis * (t - t_k) / (t_j - t_k)
        assert ours[j] == pytest.approx(float(torch.trapezoid(basis * dsigma_dt, t)), rel=1e-6, abs=1e-9)
    assert sum(ours) == pytest.approx(sigmas[4] - sigmas[3], rel=1e-12)


def test_ipndm_v_and_rhoab_deis_are_lms():
    model, sigmas = GaussianMixture(dim=4), log_uniform(12, 14.6, 0.03)
    x = model.sample_prior(2, 14.6)
    reference = multistep.lms(model, x.clone(), sigmas, order=3)
    assert torch.equal(multistep.ipndm_v(model, x.clone(), sigmas, max_order=3), reference)
    assert torch.equal(multistep.deis(model, x.clone(), sigmas, max_order=3, deis_mode="rhoab"), reference)
    with pytest.raises(ValueError):
        multistep.deis(model, x.clone(), sigmas, deis_mode="bogus")


# --- DDPM / DDIM / LCM in closed form --------------------------------------------------------------------------


def keyed_noise(shape, dtype=torch.float64):
    def noise_sampler(sigma, sigma_next):
        key = round(1e4 * float(sigma)) * 1000003 + round(1e4 * float(sigma_next))
        return torch.randn(shape, generator=torch.Generator().manual_seed(key), dtype=dtype)

    return noise_sampler


def karras(steps, sigma_min=0.03, sigma_max=14.6, rho=7.0):
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def test_ddim_is_euler_at_eta_0_ancestral_euler_otherwise_and_ddpm_at_eta_1():
    model, sigmas = GaussianMixture(dim=6), karras(10)
    x = model.sample_prior(3, 14.6)
    noise = keyed_noise(x.shape)
    torch.testing.assert_close(discrete.ddim(model, x.clone(), sigmas), euler.euler(model, x.clone(), sigmas),
                               rtol=1e-12, atol=1e-12)
    for eta in (0.4, 1.0):
        torch.testing.assert_close(discrete.ddim(model, x.clone(), sigmas, eta=eta, noise_sampler=noise),
                                   euler.euler_ancestral(model, x.clone(), sigmas, eta=eta, noise_sampler=noise),
                                   rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(discrete.ddpm(model, x.clone(), sigmas, noise_sampler=noise),
                               discrete.ddim(model, x.clone(), sigmas, eta=1.0, noise_sampler=noise),
                               rtol=1e-12, atol=1e-12)


def vp_betas(timesteps=1000):
    return torch.linspace(0.00085**0.5, 0.012**0.5, timesteps, dtype=torch.float64) ** 2


def test_ddim_matches_diffusers_ddim_scheduler():
    """diffusers' DDIMScheduler.step on the VP sample z = x / sqrt(1 + sigma^2), eps from the same denoiser."""
    from diffusers import DDIMScheduler

    betas = vp_betas()
    scheduler = DDIMScheduler(num_train_timesteps=1000, trained_betas=betas.numpy(), set_alpha_to_one=True,
                              clip_sample=False, timestep_spacing="leading", steps_offset=1)
    scheduler.set_timesteps(12)
    alphas_cumprod = scheduler.alphas_cumprod.double()  # diffusers keeps them in float32: use the same values
    sigmas = [float(((1 - alphas_cumprod[t]) / alphas_cumprod[t]) ** 0.5) for t in scheduler.timesteps]
    sigmas = torch.tensor(sigmas + [0.0], dtype=torch.float64)
    model = GaussianMixture(dim=6)
    x = model.sample_prior(3, float(sigmas[0]))
    noise = keyed_noise(x.shape)
    for eta in (0.0, 0.5, 1.0):
        ours = discrete.ddim(model, x.clone(), sigmas, eta=eta, noise_sampler=noise)
        z = x / (1 + sigmas[0] ** 2) ** 0.5
        for i, t in enumerate(scheduler.timesteps):
            sigma = sigmas[i]
            x_ve = z * (1 + sigma**2) ** 0.5
            eps = (x_ve - model(x_ve, sigma.expand(3))) / sigma
            z = scheduler.step(eps, t, z, eta=eta, variance_noise=noise(sigma, sigmas[i + 1])).prev_sample
        torch.testing.assert_close(ours, z, rtol=1e-5, atol=1e-5)  # diffusers' float32 scalars: ~1e-7
        assert ((ours - z).norm() / z.norm()) < 2e-6


def test_ddpm_step_is_ho_et_al_posterior_sampling():
    """One step of Ho et al. 2020, eq. 6-7 with sigma_t^2 = beta_tilde, written in the VP variables, from a
    training schedule's alpha_bar at two timesteps, against ours in the sigma variables."""
    alphas_cumprod = torch.cumprod(1 - vp_betas(), 0)
    a_t, a_prev = alphas_cumprod[600], alphas_cumprod[540]
    sigma, sigma_prev = ((1 - a_t) / a_t) ** 0.5, ((1 - a_prev) / a_prev) ** 0.5
    model = GaussianMixture(dim=6)
    x = model.sample_prior(3, float(sigma))
    noise = keyed_noise(x.shape)
    ours = discrete.ddpm(model, x.clone(), torch.stack([sigma, sigma_prev]), noise_sampler=noise)

    x0 = model(x, sigma.expand(3))
    z_t = x * a_t**0.5
    beta_t = 1 - a_t / a_prev  # the effective beta of the skipped interval
    mean = (a_prev**0.5 * beta_t / (1 - a_t)) * x0 + ((1 - beta_t) ** 0.5 * (1 - a_prev) / (1 - a_t)) * z_t
    beta_tilde = (1 - a_prev) / (1 - a_t) * beta_t
    z_prev = mean + beta_tilde**0.5 * noise(sigma, sigma_prev)
    torch.testing.assert_close(ours, z_prev / a_prev**0.5, rtol=1e-10, atol=1e-10)


def test_lcm_jumps_to_the_denoised_sample_and_renoises():
    model = GaussianMixture(dim=6)
    x = model.sample_prior(3, 14.6)
    sigmas = torch.tensor([14.6, 2.0], dtype=torch.float64)
    noise = keyed_noise(x.shape)
    out = discrete.lcm(model, x.clone(), sigmas, noise_sampler=noise)
    torch.testing.assert_close(out, model(x, sigmas[0].expand(3)) + 2.0 * noise(14.6, 2.0))
    final = discrete.lcm(model, x.clone(), torch.tensor([14.6, 0.0], dtype=torch.float64), noise_sampler=noise)
    torch.testing.assert_close(final, model(x, sigmas[0].expand(3)), rtol=0, atol=0)


# --- Restart ----------------------------------------------------------------------------------------------------


def test_restart_without_segments_is_heun_and_segments_add_steps():
    model, sigmas = GaussianMixture(dim=4), karras(10, sigma_max=14.6)
    x = model.sample_prior(2, 14.6)
    assert torch.equal(restart.restart(model, x.clone(), sigmas, restart_list=()),
                       euler.heun(model, x.clone(), sigmas))
    n, k = 4, 3
    steps = []
    model.calls = 0
    restart.restart(model, x.clone(), sigmas, restart_list=[(n, k, 0.5, 2.5)], callback=steps.append)
    assert [step["i"] for step in steps] == list(range(10 + (n - 1) * k))
    assert model.calls == 2 * 10 - 1 + 2 * (n - 1) * k  # Heun: two calls a step, one for the last step to 0
    j = int(torch.argmin((sigmas[1:-1] - 0.5).abs())) + 1
    restart_levels = [float(step["sigma"]) for step in steps[j:j + (n - 1) * k]]
    assert restart_levels[0] == pytest.approx(2.5) and restart_levels[n - 1] == pytest.approx(2.5)
    assert all(a > b for a, b in zip(restart_levels[: n - 1], restart_levels[1 : n - 1]))
    assert float(steps[j + (n - 1) * k]["sigma"]) == float(sigmas[j])  # back on the main schedule


def test_restart_plan_snaps_t_min_to_the_schedule():
    sigmas = karras(10)
    plan = restart.restart_plan(sigmas, restart.DEFAULT_RESTARTS)
    ((j, segments),) = plan.items()
    assert abs(float(sigmas[j]) - 0.1) == min(abs(float(s) - 0.1) for s in sigmas[1:-1])
    assert segments == [(10, 2, 2.0)]
    assert restart.restart_plan(sigmas, [(10, 2, 0.1, 0.01)]) == {}  # t_max below t_min: no restart


# --- noise, callbacks and the calling contract ------------------------------------------------------------------

STOCHASTIC = [
    ("euler_ancestral", {}), ("dpm_2_ancestral", {}), ("ddpm", {}), ("lcm", {}), ("ddim", {"eta": 0.5}),
    ("restart", {"restart_list": [(4, 1, 0.3, 2.0)]}),
    ("euler", {"s_churn": 1.0}), ("heun", {"s_churn": 1.0}), ("dpm_2", {"s_churn": 1.0}), ("heunpp2", {"s_churn": 1.0}),
]


@pytest.mark.parametrize("name,options", STOCHASTIC, ids=[f"{n}-{o}" for n, o in STOCHASTIC])
def test_seeded_noise_is_reproducible_and_independent_of_dtype(name, options):
    model, sigmas = GaussianMixture(dim=4), karras(8)
    x = model.sample_prior(2, 14.6)
    run = lambda x, seed: SPECS[name].fn(model, x.clone(), sigmas, extra_args={"seed": seed}, **options)  # noqa: E731
    first, again, other = run(x, 7), run(x, 7), run(x, 8)
    assert torch.equal(first, again)
    assert (first - other).abs().max() > 1e-3
    sigmas = sigmas.float()  # (float64 sigmas would promote the float32 sample, as in k-diffusion)
    single = run(x.float(), 7)
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), first, rtol=1e-4, atol=1e-4)  # the same noise, drawn on the CPU


@pytest.mark.parametrize("name", sorted(SPECS))
def test_callback_once_per_step_and_a_plain_lambda_model(name):
    sigmas = karras(12).float()
    seen_sigmas = []

    def model(x, sigma):  # exact denoiser for N(0, I) data; no **kwargs: the seed must not reach it
        assert sigma.shape == (x.shape[0],)
        seen_sigmas.append(sigma)
        return x / (1 + sigma[:, None] ** 2)

    steps = []
    x = torch.randn(2, 5, generator=torch.Generator().manual_seed(0)) * 14.6
    out = SPECS[name].fn(model, x, sigmas, extra_args={"seed": 3}, callback=steps.append, disable=True)
    assert out.shape == x.shape and torch.isfinite(out).all()
    expected_steps = len(sigmas) - 1 + (18 if name == "restart" else 0)  # default segment: N = 10, K = 2, [0.1, 2]
    assert [step["i"] for step in steps] == list(range(expected_steps))
    for step in steps:
        assert set(step) == {"i", "x", "sigma", "sigma_hat", "denoised"}
        assert step["x"].shape == x.shape and step["denoised"].shape == x.shape
    assert [float(step["sigma"]) for step in steps[:2]] == [float(sigmas[0]), float(sigmas[1])]
    if not SPECS[name].stochastic:
        # the ODE from 14.6 to 0 maps x to x / sqrt(1 + 14.6^2); every step is linear in x, so out = c x
        ratio = out / x
        assert torch.allclose(ratio, ratio.mean(), rtol=1e-4)
        assert abs(float(ratio.mean()) * (1 + 14.6**2) ** 0.5 - 1) < 0.15, name


def test_churn_raises_the_noise_level_within_its_range():
    model, sigmas = GaussianMixture(dim=4), karras(8)
    x = model.sample_prior(2, 14.6)
    steps = []
    euler.heun(model, x, sigmas, s_churn=4.0, s_tmin=0.5, s_tmax=5.0, callback=steps.append)
    for step in steps:
        sigma, sigma_hat = float(step["sigma"]), float(step["sigma_hat"])
        gamma = min(4.0 / 8, 2**0.5 - 1) if 0.5 <= sigma <= 5.0 else 0.0
        assert sigma_hat == pytest.approx(sigma * (1 + gamma), rel=1e-12)
