"""UniPC, RES multistep, ER-SDE, SEEDS and SA-Solver give ComfyUI's results: same denoiser, sigmas and noise."""
import contextlib

import pytest
import torch

from diffusion_blocks.devtools.gmm import GaussianMixture
from diffusion_blocks.samplers import er_sde, res_multistep, sa_solver, seeds, unipc
from harness.comfy_model import sd1_k_model

MODULES = (unipc, res_multistep, er_sde, seeds, sa_solver)
OURS = {name: spec.fn for module in MODULES for name, spec in module.SPECS.items()}
RTOL = 1e-5


@pytest.fixture(scope="module")
def k(comfy):
    import comfy.k_diffusion.sampling

    return comfy.k_diffusion.sampling


@pytest.fixture(scope="module")
def setup(k):
    gmm = GaussianMixture(dim=8, components=3, seed=0)
    sigmas = k.get_sigmas_karras(10, 0.0292, 14.6146).double()  # ends in 0
    return gmm, gmm.sample_prior(3, 14.6146), sigmas


class PreDrawnNoise:
    """Noise sampler returning pre-drawn tensors in call order, recording the (sigma, sigma_next) of each call."""

    def __init__(self, like, count=64):
        g = torch.Generator().manual_seed(5)
        self.draws = [torch.randn(like.shape, generator=g, dtype=like.dtype) for _ in range(count)]
        self.calls = []

    def __call__(self, sigma, sigma_next):
        self.calls.append((float(sigma), float(sigma_next)))
        return self.draws[len(self.calls) - 1]


def relative(a, b):
    return float((a - b).norm() / b.norm())


def compare(ours, theirs, gmm, x, sigmas, stochastic, **options):
    mine, ref = PreDrawnNoise(x), PreDrawnNoise(x)
    noise = {"noise_sampler": mine} if stochastic else {}
    got = ours(gmm, x.clone(), sigmas.clone(), **noise, **options)
    noise = {"noise_sampler": ref} if stochastic else {}
    want = theirs(x.clone(), sigmas.clone(), **noise, **options)
    assert relative(got, want) <= RTOL
    if stochastic:
        assert len(mine.calls) == len(ref.calls) > 0
        assert torch.allclose(torch.tensor(mine.calls), torch.tensor(ref.calls), rtol=1e-9, atol=0)


CASES = [  # (our name, ComfyUI's function, stochastic, options)
    ("res_multistep", "sample_res_multistep", False, {}),
    ("res_multistep_ancestral", "sample_res_multistep_ancestral", True, {}),
    ("res_multistep_ancestral", "sample_res_multistep_ancestral", True, {"eta": 0.5, "s_noise": 0.7}),
    ("er_sde", "sample_er_sde", True, {}),
    ("er_sde", "sample_er_sde", True, {"max_stage": 1}),
    ("er_sde", "sample_er_sde", True, {"max_stage": 2, "s_noise": 0.5}),
    ("er_sde", "sample_er_sde", True, {"noise_scaler": lambda lam: lam**2}),  # ComfyUI's "Reverse-time SDE", eta 1
    ("er_sde", "sample_er_sde", True, {"noise_scaler": lambda lam: lam}),  # ComfyUI's "ODE"
    ("seeds_2", "sample_seeds_2", True, {}),
    ("seeds_2", "sample_seeds_2", False, {"eta": 0.0}),
    ("seeds_2", "sample_seeds_2", True, {"eta": 0.5, "s_noise": 0.8, "r": 0.4}),
    ("seeds_3", "sample_seeds_3", True, {}),
    ("seeds_3", "sample_seeds_3", True, {"eta": 0.5, "s_noise": 0.8, "r_1": 0.3, "r_2": 0.7}),
    ("sa_solver", "sample_sa_solver", True, {}),  # default SDE band: ComfyUI derives it from the model sampling
    ("sa_solver", "sample_sa_solver", True, {"predictor_order": 2, "corrector_order": 2, "simple_order_2": True}),
    ("sa_solver", "sample_sa_solver", True, {"predictor_order": 1, "corrector_order": 1, "s_noise": 0.5}),
    ("sa_solver", "sample_sa_solver", True, {"predictor_order": 5, "corrector_order": 6}),
    ("sa_solver", "sample_sa_solver", True, {"corrector_order": 0}),
    ("sa_solver_pece", "sample_sa_solver_pece", True, {}),
]


@pytest.mark.parametrize("name, reference, stochastic, options", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_matches_comfyui(k, setup, name, reference, stochastic, options):
    gmm, x, sigmas = setup
    comfy_fn = getattr(k, reference)
    theirs = lambda x, sigmas, **kw: comfy_fn(sd1_k_model(gmm), x, sigmas, disable=True, **kw)  # noqa: E731
    compare(OURS[name], theirs, gmm, x, sigmas, stochastic, **options)


@pytest.mark.parametrize("name, reference, stochastic",
                         [("res_multistep", "sample_res_multistep", False),
                          ("res_multistep_ancestral", "sample_res_multistep_ancestral", True),
                          ("er_sde", "sample_er_sde", True), ("seeds_2", "sample_seeds_2", True),
                          ("seeds_3", "sample_seeds_3", True)])
def test_matches_comfyui_on_sigmas_ending_above_zero(k, setup, name, reference, stochastic):
    """Split sigmas (leftover noise). sa_solver is left out: ComfyUI's returns the state one sigma early there."""
    gmm, x, sigmas = setup
    comfy_fn = getattr(k, reference)
    theirs = lambda x, sigmas, **kw: comfy_fn(sd1_k_model(gmm), x, sigmas, disable=True, **kw)  # noqa: E731
    compare(OURS[name], theirs, gmm, x, sigmas[:7], stochastic)


@contextlib.contextmanager
def default_dtype(dtype):
    """ComfyUI's UniPC builds its weight tensors in the default dtype, so float64 latents need float64 there."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def comfy_unipc(x, sigmas, gmm, variant):
    from comfy.extra_samplers import uni_pc as comfy_uni_pc

    with default_dtype(x.dtype):
        return comfy_uni_pc.sample_unipc(gmm, x.clone(), sigmas.clone(), extra_args={}, disable=True, variant=variant)


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_uni_pc_matches_comfyui_on_sigmas_ending_above_zero(comfy, setup, variant):
    gmm, x, sigmas = setup
    ours = OURS["uni_pc" if variant == "bh1" else "uni_pc_bh2"]
    assert relative(ours(gmm, x.clone(), sigmas[:-1].clone()), comfy_unipc(x, sigmas[:-1], gmm, variant)) <= RTOL


@pytest.fixture(scope="module")
def exact_jump(setup):
    """The exact answer on the mixture for a schedule ending in 0: D(x(sigma_min), sigma_min), x by fine RK4."""
    from diffusion_blocks.devtools.gmm import reference_solution

    gmm, x, _ = setup
    exact = reference_solution(gmm, x.clone(), 14.6146, 0.0292, steps=500)
    return gmm(exact, torch.full((x.shape[0],), 0.0292, dtype=x.dtype))


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_uni_pc_finishes_with_the_denoising_jump_where_comfyui_stops_at_0_001(k, setup, exact_jump, variant):
    """Known divergence, on purpose. Asked for a final sigma of 0, ComfyUI's UniPC replaces it by 0.001 and integrates
    one more ODE step of fixed size, sigma_min -> 0.001, whatever the number of steps; ours ends as every other
    sampler does, with the denoising jump x = D(x, sigma_min) (same number of model calls). At 10 steps the results
    differ by ~5e-4 relative; against the exact answer D(x(sigma_min), sigma_min) on the Gaussian mixture, ComfyUI's
    error stops falling at ~4e-5 from 64 steps on while ours keeps falling (1.3e-6 at 128 steps). If ComfyUI changes
    this, this test says so."""
    gmm, x, sigmas = setup
    ours = OURS["uni_pc" if variant == "bh1" else "uni_pc_bh2"]
    assert 1e-4 <= relative(ours(gmm, x.clone(), sigmas.clone()), comfy_unipc(x, sigmas, gmm, variant)) <= 2e-3
    for steps in (64, 128):
        sigmas = k.get_sigmas_karras(steps, 0.0292, 14.6146).double()
        theirs = relative(comfy_unipc(x, sigmas, gmm, variant), exact_jump)
        assert theirs >= 3e-5, f"ComfyUI's UniPC at {steps} steps: error {theirs:.1e}, no longer stalled"
        assert relative(ours(gmm, x.clone(), sigmas.clone()), exact_jump) <= theirs / 10


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_uni_pc_matches_comfyui_in_float32(comfy, setup, variant):
    """ComfyUI's own dtype, on sigmas ending above 0 (ours computes the step coefficients in float64)."""
    from comfy.extra_samplers import uni_pc as comfy_uni_pc

    gmm, x, sigmas = setup
    ours = OURS["uni_pc" if variant == "bh1" else "uni_pc_bh2"]
    s = sigmas[:-1].float()
    want = comfy_uni_pc.sample_unipc(gmm, x.float(), s.clone(), extra_args={}, disable=True, variant=variant)
    assert relative(ours(gmm, x.float(), s.clone()), want) <= RTOL
