"""The classic samplers (Euler/Heun family, linear multistep, DDPM/DDIM/LCM, Restart) give ComfyUI 0.3.75's
results on the same denoiser, sigmas and noise; where they differ on purpose, the difference is pinned here."""

import pytest
import torch

from diffusion_blocks.devtools.gmm import GaussianMixture
from diffusion_blocks.samplers import discrete, euler, multistep, restart
from harness.comfy_model import sd1_k_model as Reference
from harness.comfy_model import keyed_noise_for

BATCH, DIM = 3, 8
keyed_noise = keyed_noise_for((BATCH, DIM))
SPECS = {**euler.SPECS, **multistep.SPECS, **discrete.SPECS, **restart.SPECS}


def start(sigma_max):
    return GaussianMixture(dim=DIM).sample_prior(BATCH, float(sigma_max), seed=3)


def relative(ours, theirs):
    return float((ours - theirs).norm() / theirs.norm())


def assert_same(ours, theirs, rtol=1e-5):
    assert torch.isfinite(ours).all()
    assert relative(ours, theirs) < rtol, f"relative difference {relative(ours, theirs):.2e}"
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=10 * rtol)


def run_pair(kd, sigmas, name, options, comfy_name=None, noise=None):
    x = start(sigmas[0])
    noise = {} if noise is None else {"noise_sampler": noise}
    ours = SPECS[name].fn(GaussianMixture(dim=DIM), x.clone(), sigmas, **noise, **options)
    theirs = getattr(kd, f"sample_{comfy_name or name}")(Reference(GaussianMixture(dim=DIM)), x.clone(), sigmas,
                                                         disable=True, **noise, **options)
    return ours, theirs


ODE_CASES = [
    ("euler", {}), ("heun", {}), ("dpm_2", {}), ("heunpp2", {}),
    ("lms", {}), ("lms", {"order": 1}), ("lms", {"order": 2}), ("lms", {"order": 3}),
    ("ipndm", {}), ("ipndm", {"max_order": 2}), ("ipndm", {"max_order": 3}),
    ("ipndm_v", {"max_order": 2}),
    ("deis", {}), ("deis", {"max_order": 2}), ("deis", {"max_order": 4}),
]


@pytest.mark.parametrize("name,options", ODE_CASES, ids=[f"{n}-{o}" for n, o in ODE_CASES])
def test_deterministic_samplers_match_comfyui(kd, sigmas, name, options):
    assert_same(*run_pair(kd, sigmas, name, options))


NOISY_CASES = [
    ("euler_ancestral", {}), ("euler_ancestral", {"eta": 0.0}), ("euler_ancestral", {"eta": 0.5, "s_noise": 0.9}),
    ("dpm_2_ancestral", {}), ("dpm_2_ancestral", {"eta": 0.0}), ("dpm_2_ancestral", {"eta": 0.5, "s_noise": 0.9}),
    ("ddpm", {}), ("lcm", {}),
]


@pytest.mark.parametrize("name,options", NOISY_CASES, ids=[f"{n}-{o}" for n, o in NOISY_CASES])
def test_stochastic_samplers_match_comfyui_given_the_same_noise(kd, sigmas, name, options):
    assert_same(*run_pair(kd, sigmas, name, options, noise=keyed_noise))


CHURN_CASES = [
    ("euler", {"s_churn": 2.0, "s_tmin": 0.05, "s_tmax": 5.0, "s_noise": 1.003}),
    ("heun", {"s_churn": 2.0, "s_tmin": 0.05, "s_tmax": 5.0, "s_noise": 1.003}),
    ("dpm_2", {"s_churn": 2.0, "s_tmin": 0.05, "s_tmax": 5.0, "s_noise": 1.003}),
    ("heunpp2", {"s_churn": 2.0, "s_noise": 1.003}),  # ComfyUI's heunpp2 draws every step: churn over the whole range
    ("euler", {"s_churn": 40.0}),  # gamma capped at sqrt(2) - 1
]


@pytest.mark.parametrize("name,options", CHURN_CASES, ids=[f"{n}-{o}" for n, o in CHURN_CASES])
def test_churn_matches_comfyui(kd, sigmas, name, options):
    """ComfyUI's churn draws torch.randn_like from the global generator; ours draws from noise_sampler, given
    here as the same global draws: equal results mean the same sigma_hat, noise scale and order of calls."""
    x = start(sigmas[0])
    torch.manual_seed(1234)
    theirs = getattr(kd, f"sample_{name}")(Reference(GaussianMixture(dim=DIM)), x.clone(), sigmas, disable=True,
                                           **options)
    torch.manual_seed(1234)
    ours = SPECS[name].fn(GaussianMixture(dim=DIM), x.clone(), sigmas, noise_sampler=lambda *_: torch.randn_like(x),
                          **options)
    assert_same(ours, theirs)
    plain = SPECS[name].fn(GaussianMixture(dim=DIM), x.clone(), sigmas)
    assert relative(ours, plain) > 1e-3  # the churn did something


def test_deis_rhoab_matches_comfyui_where_comfyui_runs(kd):
    """ComfyUI's rhoab mode builds one weight too many once i >= max_order and fails to unpack them; on a
    schedule short enough to stay below that, it agrees with ours (variable-step Adams-Bashforth in sigma)."""
    sigmas = kd.get_sigmas_karras(4, 0.03, 14.6)  # i = 0..3, the last step (to 0) is Euler
    assert_same(*run_pair(kd, sigmas, "deis", {"max_order": 3, "deis_mode": "rhoab"}))
    with pytest.raises(ValueError):
        run_pair(kd, kd.get_sigmas_karras(8, 0.03, 14.6), "deis", {"max_order": 3, "deis_mode": "rhoab"})
    longer = kd.get_sigmas_karras(8, 0.03, 14.6)
    x = start(longer[0])
    model = GaussianMixture(dim=DIM)
    assert_same(multistep.deis(model, x.clone(), longer, max_order=3, deis_mode="rhoab"),
                multistep.lms(model, x.clone(), longer, order=3), rtol=1e-12)


@pytest.mark.parametrize("name", ["ipndm", "ipndm_v", "deis"])
def test_first_order_multistep_is_euler_where_comfyui_fails(kd, sigmas, name):
    """ComfyUI's ipndm, ipndm_v and deis raise IndexError with max_order=1 (their history buffer update assigns
    to buffer[-1] of an empty list); ours take Euler steps."""
    with pytest.raises(IndexError):
        run_pair(kd, sigmas, name, {"max_order": 1})
    x = start(sigmas[0])
    ours = SPECS[name].fn(GaussianMixture(dim=DIM), x.clone(), sigmas, max_order=1)
    assert_same(ours, euler.euler(GaussianMixture(dim=DIM), x.clone(), sigmas), rtol=1e-10)


def test_ipndm_v_matches_comfyui_to_third_order_on_evenly_spaced_sigmas(kd):
    sigmas = torch.cat([torch.linspace(6.0, 0.5, 12), torch.zeros(1)])
    assert_same(*run_pair(kd, sigmas, "ipndm_v", {"max_order": 3}))
    ours, theirs = run_pair(kd, sigmas, "ipndm_v", {"max_order": 4})
    assert relative(ours, theirs) > 1e-5  # see below: ComfyUI's 4th-order weights are (57, -65, 43, -11) / 24 here


def test_ipndm_v_third_and_fourth_order_weights_differ_from_comfyui_on_uneven_steps(kd, sigmas):
    """Known divergence. ComfyUI's ipndm_v (from zju-pi/diff-solvers) writes the second-difference weight as
    (1 - h/(3(h + h1)) * h(h + h1)/(h1(h1 + h2))) / 2; the exact variable-step Adams-Bashforth weight is
    (1 - h/(3(h + h1))) * h(h + h1)/(h1(h1 + h2)) / 2 (a parenthesis apart), and its third-difference weight is
    off as well: on even steps its 4th-order weights are (57, -65, 43, -11) / 24, not Adams-Bashforth's
    (55, -59, 37, -9) / 24. The two agree for max_order <= 2, and for max_order 3 on even steps. Ours is the
    exact one: the same numbers as lms. If ComfyUI changes this, this test says so."""
    ours, theirs = run_pair(kd, sigmas, "ipndm_v", {"max_order": 4})
    x = start(sigmas[0])
    assert_same(ours, multistep.lms(GaussianMixture(dim=DIM), x.clone(), sigmas, order=4), rtol=1e-12)
    assert_same(multistep.lms(GaussianMixture(dim=DIM), x.clone(), sigmas, order=4),
                kd.sample_lms(Reference(GaussianMixture(dim=DIM)), x.clone(), sigmas, disable=True, order=4))
    assert relative(ours, theirs) > 1e-3


def test_ddim_is_comfyuis_euler_at_eta_0_and_its_ancestral_euler_otherwise(kd, sigmas):
    """ComfyUI has no DDIM function: its "ddim" sampler name runs Euler. DDIM in the sigma variables is exactly
    Euler at eta = 0 and ancestral Euler with the same eta otherwise (same sigma_up), and DDPM at eta = 1."""
    assert_same(*run_pair(kd, sigmas, "ddim", {}, comfy_name="euler"))
    for eta in (0.3, 1.0):
        assert_same(*run_pair(kd, sigmas, "ddim", {"eta": eta}, comfy_name="euler_ancestral", noise=keyed_noise))
    x = start(sigmas[0])
    ours = discrete.ddim(GaussianMixture(dim=DIM), x.clone(), sigmas, eta=1.0, noise_sampler=keyed_noise)
    assert_same(ours, kd.sample_ddpm(Reference(GaussianMixture(dim=DIM)), x.clone(), sigmas, disable=True,
                                     noise_sampler=keyed_noise))


def test_comfyuis_ddim_sampler_name_is_euler(comfy, sigmas):
    import comfy.samplers

    x = start(sigmas[0])
    theirs = comfy.samplers.sampler_object("ddim").sampler_function(Reference(GaussianMixture(dim=DIM)), x.clone(),
                                                                    sigmas, {}, None, True)
    assert_same(discrete.ddim(GaussianMixture(dim=DIM), x.clone(), sigmas), theirs)


def test_restart_without_segments_is_comfyuis_heun(kd, sigmas):
    x = start(sigmas[0])
    for segments in ((), [(10, 2, 0.1, 0.05)]):  # none; t_max below t_min: nothing to restart
        ours = restart.restart(GaussianMixture(dim=DIM), x.clone(), sigmas, restart_list=segments)
        assert_same(ours, kd.sample_heun(Reference(GaussianMixture(dim=DIM)), x.clone(), sigmas, disable=True))


def test_restart_is_comfyuis_heun_pieced_together_with_the_restart_noise(kd):
    """Restart (Xu et al. 2023, Alg. 1) built from ComfyUI's sample_heun: the main schedule down to t_min, then K
    times (noise up to t_max, Heun down a Karras schedule of N levels), then the rest of the main schedule."""
    sigmas = kd.get_sigmas_karras(12, 0.03, 14.6)
    n, k, t_min, t_max = 5, 2, 0.4, 3.0
    j = int(torch.argmin((sigmas[1:-1] - t_min).abs())) + 1
    x = start(sigmas[0])
    ours = restart.restart(GaussianMixture(dim=DIM), x.clone(), sigmas, restart_list=[(n, k, t_min, t_max)],
                           s_noise=0.95, noise_sampler=keyed_noise)
    model = Reference(GaussianMixture(dim=DIM))
    levels = kd.get_sigmas_karras(n, float(sigmas[j]), t_max)[:-1]  # N levels from t_max down to sigma_j
    theirs = kd.sample_heun(model, x.clone(), sigmas[: j + 1], disable=True)
    for _ in range(k):
        theirs = theirs + keyed_noise(t_max, sigmas[j]) * 0.95 * (t_max**2 - sigmas[j] ** 2) ** 0.5
        theirs = kd.sample_heun(model, theirs, levels, disable=True)
    theirs = kd.sample_heun(model, theirs, sigmas[j:], disable=True)
    assert_same(ours, theirs)
