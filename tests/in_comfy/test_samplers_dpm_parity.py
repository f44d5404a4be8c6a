"""DPM-Solver and DPM-Solver++ samplers give ComfyUI 0.3.75's results on the same denoiser, sigmas and noise."""
import pytest
import torch

from diffusion_blocks.devtools.gmm import GaussianMixture
from diffusion_blocks.samplers import dpm_solver, dpmpp
from harness.comfy_model import sd1_k_model as Reference
from harness.comfy_model import keyed_noise_for

BATCH, DIM = 3, 8
keyed_noise = keyed_noise_for((BATCH, DIM))


def start(sigma_max):
    return GaussianMixture(dim=DIM).sample_prior(BATCH, float(sigma_max), seed=3)


def assert_same(ours, theirs):
    assert torch.isfinite(ours).all()
    rel = (ours - theirs).norm() / theirs.norm()
    assert rel < 1e-5, f"relative difference {rel:.2e}"
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


DPMPP_CASES = [
    ("dpmpp_2m", {}),
    ("dpmpp_2s_ancestral", {}),
    ("dpmpp_2s_ancestral", {"eta": 0.0}),
    ("dpmpp_2s_ancestral", {"eta": 0.6, "s_noise": 0.9}),
    ("dpmpp_sde", {}),
    ("dpmpp_sde", {"eta": 0.0}),
    ("dpmpp_sde", {"eta": 0.5, "r": 1 / 3, "s_noise": 1.1}),
    ("dpmpp_2m_sde", {}),
    ("dpmpp_2m_sde", {"eta": 0.0}),
    ("dpmpp_2m_sde", {"solver_type": "heun"}),
    ("dpmpp_2m_sde", {"solver_type": "heun", "eta": 0.0}),
    ("dpmpp_2m_sde", {"eta": 0.7, "s_noise": 0.8}),
    ("dpmpp_3m_sde", {}),
    ("dpmpp_3m_sde", {"eta": 0.0}),
    ("dpmpp_3m_sde", {"eta": 0.5, "s_noise": 1.2}),
]


@pytest.mark.parametrize("name,options", DPMPP_CASES, ids=[f"{n}-{o}" for n, o in DPMPP_CASES])
def test_dpmpp_matches_comfyui(kd, sigmas, name, options):
    x = start(sigmas[0])
    noise = {"noise_sampler": keyed_noise} if dpmpp.SPECS[name].stochastic else {}
    ours = dpmpp.SPECS[name].fn(GaussianMixture(dim=DIM), x.clone(), sigmas, **noise, **options)
    theirs = getattr(kd, f"sample_{name}")(Reference(GaussianMixture(dim=DIM)), x.clone(), sigmas,
                                           disable=True, **noise, **options)
    assert_same(ours, theirs)


def last_nonzero(sigmas):
    return sigmas[-2] if sigmas[-1] == 0 else sigmas[-1]


@pytest.mark.parametrize("options", [{}, {"eta": 0.5, "s_noise": 0.9}], ids=["ode", "eta"])
@pytest.mark.parametrize("steps", [1, 2, 3, 9, 10, 11])
def test_dpm_fast_matches_comfyui(kd, steps, options):
    if steps == 1 and options:
        pytest.skip("one step to 0: first and last nonzero sigma coincide; ComfyUI refuses eta > 0 there")
    sigmas = kd.get_sigmas_karras(steps, 0.03, 14.6)
    x = start(sigmas[0])
    noise = {"noise_sampler": keyed_noise} if options else {}
    model = GaussianMixture(dim=DIM)
    ours = dpm_solver.dpm_fast(model, x.clone(), sigmas, **noise, **options)
    assert model.calls == steps  # n = len(sigmas) - 1 model calls
    theirs = kd.sample_dpm_fast(Reference(GaussianMixture(dim=DIM)), x.clone(), last_nonzero(sigmas), sigmas[0],
                                len(sigmas) - 1, disable=True, **noise, **options)
    assert_same(ours, theirs)


ADAPTIVE_CASES = [
    {},
    {"order": 2},
    {"rtol": 0.01, "atol": 0.001, "h_init": 0.2},
    {"pcoeff": 0.3, "icoeff": 0.8, "dcoeff": 0.1, "accept_safety": 0.9},
    {"eta": 0.5, "s_noise": 0.9},
    {"order": 2, "eta": 1.0},
]


@pytest.mark.parametrize("options", ADAPTIVE_CASES, ids=[str(o) for o in ADAPTIVE_CASES])
def test_dpm_adaptive_matches_comfyui(kd, sigmas, options):
    x = start(sigmas[0])
    noise = {"noise_sampler": keyed_noise} if options.get("eta") else {}
    ours = dpm_solver.dpm_adaptive(GaussianMixture(dim=DIM), x.clone(), sigmas, **noise, **options)
    theirs, info = kd.sample_dpm_adaptive(Reference(GaussianMixture(dim=DIM)), x.clone(), last_nonzero(sigmas),
                                          sigmas[0], disable=True, return_info=True, **noise, **options)
    assert info["n_accept"] > 3
    assert_same(ours, theirs)


def test_dpm_adaptive_reuses_the_evaluation_after_a_rejected_step(kd, sigmas):
    """Same result as ComfyUI's, with one model call fewer per rejection (ComfyUI evaluates (x, sigma) again)."""
    x = start(sigmas[0])
    options = {"rtol": 0.01, "atol": 0.001, "h_init": 2.0}  # a first step far too large: rejections
    ours_model, their_model = GaussianMixture(dim=DIM), GaussianMixture(dim=DIM)
    ours = dpm_solver.dpm_adaptive(ours_model, x.clone(), sigmas, **options)
    theirs, info = kd.sample_dpm_adaptive(Reference(their_model), x.clone(), last_nonzero(sigmas), sigmas[0],
                                          disable=True, return_info=True, **options)
    assert info["n_reject"] > 0
    assert_same(ours, theirs)
    assert ours_model.calls == their_model.calls - info["n_reject"]


def test_comfyui_ksampler_wrappers_take_the_same_sigmas(comfy, sigmas):
    """ComfyUI's KSAMPLER wrappers for dpm_fast / dpm_adaptive read (sigma_min, sigma_max, n) from sigmas as we do."""
    import comfy.samplers

    x = start(sigmas[0])
    for name, ours_fn in (("dpm_fast", dpm_solver.dpm_fast), ("dpm_adaptive", dpm_solver.dpm_adaptive)):
        wrapper = comfy.samplers.ksampler(name).sampler_function
        theirs = wrapper(Reference(GaussianMixture(dim=DIM)), x.clone(), sigmas, {}, None, True)
        assert_same(ours_fn(GaussianMixture(dim=DIM), x.clone(), sigmas), theirs)
