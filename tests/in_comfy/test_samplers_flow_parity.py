"""Every sampler on a rectified-flow model (ComfyUI's CONST model sampling with shift 3, as SD3), run the way
SamplerCustom runs it: the SAMPLER's own sample() with the model, so the pack's samplers learn the model's kind there.

Each sampler either matches ComfyUI's sampler of the same name on the same model, denoiser, sigmas and noise
(MATCHES), or, where ComfyUI has none or ComfyUI's is off the flow's path (OWN), is checked against the exact answer:
with point-mass data every sampler must end on the flow's path, x = (1 - sigma) mu + sigma z (test_every_sampler_
ends_on_the_flows_path, which all of them pass). A new sampler fails here until it is put in one of the two tables.
"""
from types import SimpleNamespace

import pytest
import torch

from diffusion_blocks.devtools.gmm import GaussianMixture
from harness.comfy_model import keyed_noise_for

BATCH, DIM = 3, 8
keyed_noise = keyed_noise_for((BATCH, DIM))
RTOL = 1e-5

# name -> (ComfyUI's sampler name, options for both, sigmas: "full" or "above_zero")
MATCHES = {
    "euler": ("euler", {}, "full"),
    "euler_ancestral": ("euler_ancestral", {}, "full"),
    "heun": ("heun", {}, "full"),
    "heunpp2": ("heunpp2", {}, "full"),
    "dpm_2": ("dpm_2", {}, "full"),
    "dpm_2_ancestral": ("dpm_2_ancestral", {}, "full"),
    "lms": ("lms", {}, "full"),
    "dpm_fast": ("dpm_fast", {}, "full"),
    "dpm_adaptive": ("dpm_adaptive", {}, "full"),
    "dpmpp_2s_ancestral": ("dpmpp_2s_ancestral", {}, "full"),
    "dpmpp_sde": ("dpmpp_sde", {}, "full"),
    "dpmpp_2m": ("dpmpp_2m", {}, "full"),
    "dpmpp_2m_sde": ("dpmpp_2m_sde", {}, "full"),
    "dpmpp_3m_sde": ("dpmpp_3m_sde", {}, "full"),
    "lcm": ("lcm", {}, "full"),
    "ipndm": ("ipndm", {}, "full"),
    # ComfyUI's third- and fourth-order ipndm_v weights differ on any model (test_samplers_classic_parity.py)
    "ipndm_v": ("ipndm_v", {"max_order": 2}, "full"),
    "deis": ("deis", {}, "full"),
    "res_multistep": ("res_multistep", {}, "full"),
    "er_sde": ("er_sde", {}, "full"),
    "seeds_2": ("seeds_2", {}, "full"),
    "seeds_3": ("seeds_3", {}, "full"),
    "sa_solver": ("sa_solver", {}, "full"),
    "sa_solver_pece": ("sa_solver_pece", {}, "full"),
    "ddim": ("ddim", {}, "full"),  # ComfyUI's "ddim" runs Euler: ours at its default eta = 0
    # ours ends a schedule with the denoising jump, ComfyUI's at 0.001 (test_samplers_modern_parity.py)
    "uni_pc": ("uni_pc", {}, "above_zero"),
    "uni_pc_bh2": ("uni_pc_bh2", {}, "above_zero"),
}
OWN = {
    "ddpm": "ComfyUI's ddpm scales x as a variance-preserving model's on any model",
    "res_multistep_ancestral": "ComfyUI's adds the variance-exploding ancestral noise on any model",
    "restart": "ComfyUI has no restart sampler of this name",
}
# More options on the flow model, against ComfyUI's sampler of the same name.
OPTION_CASES = [
    ("euler_ancestral", {"eta": 0.5, "s_noise": 0.9}), ("dpm_2_ancestral", {"eta": 0.6}),
    ("dpmpp_2s_ancestral", {"eta": 0.7, "s_noise": 1.1}), ("dpmpp_sde", {"eta": 0.5, "r": 1 / 3}),
    ("dpmpp_2m_sde", {"solver_type": "heun"}), ("dpmpp_3m_sde", {"eta": 0.5}), ("er_sde", {"max_stage": 2}),
    ("seeds_2", {"eta": 0.5, "r": 0.4}), ("sa_solver", {"predictor_order": 2, "corrector_order": 3}),
    ("lcm", {}), ("res_multistep", {}),
]


def flow_mixture(gmm):
    """The mixture as a rectified-flow model sees it: x = (1 - s) x0 + s eps is x / (1 - s) at VE noise s / (1 - s);
    at s = 1 (pure noise) the denoiser is the data mean."""
    mean = (gmm.weights[:, None] * gmm.means).sum(0)

    def denoise(x, sigma, **_):
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1).expand(x.shape[0], 1)
        alpha = torch.where(s < 1, 1 - s, torch.ones_like(s))
        inside = gmm(x / alpha, (s / alpha).reshape(-1))
        return torch.where(s < 1, inside, mean.to(x.dtype).expand_as(x))

    return denoise


class Guider:
    """What a SAMPLER's sample() reads of ComfyUI's guider: callable as the model, inner_model.model_sampling, and
    model_patcher.get_model_object("model_sampling")."""

    def __init__(self, denoise, model_sampling):
        self.denoise = denoise
        self.inner_model = SimpleNamespace(model_sampling=model_sampling)
        self.model_patcher = SimpleNamespace(get_model_object={"model_sampling": model_sampling}.__getitem__)

    def __call__(self, x, sigma, model_options=None, seed=None):
        return self.denoise(x, sigma)


def run(sampler, guider, sigmas, noise, seed=0):
    """sampler.sample as ComfyUI's guider calls it: noise scaled to sigmas[0] first, un-scaled after."""
    latent = torch.zeros_like(noise)
    return sampler.sample(guider, sigmas.clone(), {"seed": seed}, None, noise.clone(), latent_image=latent)


@pytest.fixture(scope="module")
def flow_sigmas(comfy, flow_sampling):
    """ComfyUI's `simple` schedule for the flow model, 10 steps: 1.0 down to 0."""
    import comfy.samplers

    return comfy.samplers.calculate_sigmas(flow_sampling, "simple", 10).double()


@pytest.fixture(scope="module")
def start():
    return torch.randn(BATCH, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(4))


def relative(a, b):
    return float((a - b).norm() / b.norm())


def ours_and_comfyuis(name, options, sigmas, flow_sampling, start):
    import comfy.samplers
    from diffusion_blocks.nodes.sampler_nodes import make_sampler
    from diffusion_blocks.samplers import SAMPLER_SPECS

    comfy_name, base, _ = MATCHES[name]
    options = {**base, **options}
    noise = {"noise_sampler": keyed_noise} if SAMPLER_SPECS[name].stochastic else {}
    theirs_sampler = comfy.samplers.sampler_object(comfy_name)
    theirs_sampler.extra_options = {**options, **noise}
    guider = Guider(flow_mixture(GaussianMixture(dim=DIM, seed=0)), flow_sampling)
    ours = run(make_sampler(name, **options, **noise), guider, sigmas, start)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(start.dtype)  # ComfyUI's UniPC builds its weights in the default dtype
    try:
        return ours, run(theirs_sampler, guider, sigmas, start)
    finally:
        torch.set_default_dtype(previous)


def test_every_sampler_is_classified():
    from diffusion_blocks.samplers import SAMPLERS

    assert set(MATCHES) | set(OWN) == set(SAMPLERS) and not set(MATCHES) & set(OWN)


@pytest.mark.parametrize("name", sorted(MATCHES))
def test_matches_comfyuis_sampler_on_a_flow_model(comfy, flow_sampling, flow_sigmas, start, name):
    from diffusion_blocks.samplers import SAMPLER_SPECS, SAMPLERS

    sigmas = flow_sigmas if MATCHES[name][2] == "full" else flow_sigmas[:-1]
    ours, theirs = ours_and_comfyuis(name, {}, sigmas, flow_sampling, start)
    assert torch.isfinite(ours).all()
    assert relative(ours, theirs) <= RTOL, f"{name}: relative difference {relative(ours, theirs):.2e}"
    if SAMPLER_SPECS[name].stochastic:  # the flow's own noise made the difference
        model = flow_mixture(GaussianMixture(dim=DIM, seed=0))
        options = {**MATCHES[name][1], "noise_sampler": keyed_noise}
        as_ve = SAMPLERS[name](lambda x, s, **_: model(x, s), start.clone(), sigmas.clone(), **options)
        assert relative(as_ve, theirs) > 1e-3


@pytest.mark.parametrize("name,options", OPTION_CASES, ids=[f"{n}-{o}" for n, o in OPTION_CASES])
def test_options_match_comfyui_on_a_flow_model(comfy, flow_sampling, flow_sigmas, start, name, options):
    ours, theirs = ours_and_comfyuis(name, options, flow_sigmas, flow_sampling, start)
    assert relative(ours, theirs) <= RTOL, f"{name} {options}: relative difference {relative(ours, theirs):.2e}"


POINT_DIM = 20000


def on_the_path(result, sigma_end, mu):
    """Sampled from point-mass data mu and un-scaled by ComfyUI (x / (1 - sigma)), a result on the flow's path is
    mu + (sigma / (1 - sigma)) z: (mean error in standard errors, std relative to the exact one)."""
    ratio = sigma_end / (1 - sigma_end)
    z = (result - mu) / ratio
    return float(z.mean() * z.numel() ** 0.5), float(z.std())


def point_mass_run(sampler, flow_sampling, sigmas, mu):
    guider = Guider(lambda x, sigma: mu.expand_as(x), flow_sampling)
    noise = torch.randn(1, POINT_DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    return run(sampler, guider, sigmas, noise, seed=5)


# Options whose noise only the pack's samplers put on the flow's path (ComfyUI's churn, and its eta of DDIM-by-name,
# are variance-exploding on any model), checked the same way.
OWN_OPTION_CASES = [
    ("euler", {"s_churn": 3.0}), ("heun", {"s_churn": 3.0, "s_tmin": 0.6, "s_noise": 1.0}),
    ("dpm_2", {"s_churn": 3.0}), ("heunpp2", {"s_churn": 3.0}), ("ddim", {"eta": 1.0}),
    ("res_multistep_ancestral", {"eta": 0.5, "s_noise": 1.0}), ("restart", {"restart_list": [(4, 2, 0.5, 0.9)]}),
]
PATH_CASES = [(name, {}) for name in sorted(set(MATCHES) | set(OWN))] + OWN_OPTION_CASES


@pytest.mark.parametrize("name,options", PATH_CASES, ids=[f"{n}-{o}" for n, o in PATH_CASES])
def test_every_sampler_ends_on_the_flows_path(comfy, flow_sampling, flow_sigmas, name, options):
    """The exact answer: for data at one point mu, x at sigma is exactly (1 - sigma) mu + sigma z. Any sampler whose
    steps are exact for a constant D (the ODE ones) or keep the marginal (every fresh noise) must end there."""
    from diffusion_blocks.nodes.sampler_nodes import make_sampler

    sigmas = flow_sigmas[:9]  # leftover noise: sigma_end 0.43 (restart jumps back up to 0.67 there)
    mu = torch.full((1, POINT_DIM), 2.0, dtype=torch.float64)
    result = point_mass_run(make_sampler(name, **options), flow_sampling, sigmas, mu)
    mean_error, std = on_the_path(result, float(sigmas[-1]), mu)
    assert abs(mean_error) < 5 and abs(std - 1) < 0.03, f"{name}: mean error {mean_error:.1f} s.e., std {std:.3f}"
    if options:  # the option did something
        assert relative(result, point_mass_run(make_sampler(name), flow_sampling, sigmas, mu)) > 1e-2


@pytest.mark.parametrize("name", ["ddpm", "res_multistep_ancestral"])
def test_comfyuis_own_sampler_of_the_name_leaves_the_flows_path(comfy, flow_sampling, flow_sigmas, name):
    """Why these two are not compared with ComfyUI's: on a flow model ComfyUI's ends off the path (the same check)."""
    import comfy.samplers

    sigmas = flow_sigmas[:9]
    mu = torch.full((1, POINT_DIM), 2.0, dtype=torch.float64)
    mean_error, std = on_the_path(point_mass_run(comfy.samplers.sampler_object(name), flow_sampling, sigmas, mu),
                                  float(sigmas[-1]), mu)
    assert abs(mean_error) > 20 or abs(std - 1) > 0.1, f"ComfyUI's {name} is on the path: {mean_error:.1f}, {std:.3f}"


def test_flow_options_that_cannot_be_right_are_refused(comfy, flow_sampling, flow_sigmas):
    from diffusion_blocks.nodes.sampler_nodes import make_sampler

    guider = Guider(flow_mixture(GaussianMixture(dim=DIM, seed=0)), flow_sampling)
    x = torch.zeros(BATCH, DIM, dtype=torch.float64)
    for name in ("dpm_fast", "dpm_adaptive"):
        with pytest.raises(ValueError, match=f"{name}: eta > 0 .* does not support rectified-flow models"):
            run(make_sampler(name, eta=0.5), guider, flow_sigmas, x)
    with pytest.raises(ValueError, match="restart_list: on a rectified-flow model every t_max must be below 1"):
        run(make_sampler("restart", restart_list=[(4, 1, 0.2, 2.0)]), guider, flow_sigmas, x)
