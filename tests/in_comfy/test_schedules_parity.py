"""get_sigmas against ComfyUI 0.3.75's own schedulers, for an SD1.x model and a shift-3 flow model, steps 1..100."""

from types import SimpleNamespace

import pytest
import torch

from diffusion_blocks.schedules import FlowSchedule, ModelSchedule, get_sigmas, training_betas

STEPS = range(1, 101)
SD1_SETTINGS = {"beta_schedule": "linear", "linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000}
FLOW_SETTINGS = {"shift": 3.0, "multiplier": 1000}


@pytest.fixture(scope="module")
def models(comfy):
    """(ComfyUI's model_sampling, ours) for SD1.x (ComfyUI's "linear" is sqrt-linear) and a shift-3 flow model."""
    import comfy.model_sampling

    sd1 = comfy.model_sampling.ModelSamplingDiscrete(SimpleNamespace(sampling_settings=SD1_SETTINGS))
    flow = comfy.model_sampling.ModelSamplingDiscreteFlow(SimpleNamespace(sampling_settings=FLOW_SETTINGS))
    ours_sd1 = ModelSchedule.from_betas(
        training_betas("scaled_linear", timesteps=1000, beta_start=0.00085, beta_end=0.012)
    )
    return {"sd1": (sd1, ours_sd1), "flow": (flow, FlowSchedule(shift=3.0, multiplier=1000))}


@pytest.fixture(scope="module")
def nodes(comfy):
    """ComfyUI's scheduler node classes."""
    from comfy_extras import nodes_align_your_steps, nodes_custom_sampler, nodes_gits

    return SimpleNamespace(
        basic=nodes_custom_sampler.BasicScheduler,
        karras=nodes_custom_sampler.KarrasScheduler,
        exponential=nodes_custom_sampler.ExponentialScheduler,
        polyexponential=nodes_custom_sampler.PolyexponentialScheduler,
        vp=nodes_custom_sampler.VPScheduler,
        laplace=nodes_custom_sampler.LaplaceScheduler,
        sd_turbo=nodes_custom_sampler.SDTurboScheduler,
        beta=nodes_custom_sampler.BetaSamplingScheduler,
        ays=nodes_align_your_steps.AlignYourStepsScheduler,
        gits=nodes_gits.GITSScheduler,
    )


class ModelStub:
    """Just enough of a ComfyUI MODEL for nodes that read model.get_model_object("model_sampling")."""

    def __init__(self, model_sampling):
        self.model_sampling = model_sampling

    def get_model_object(self, name):
        assert name == "model_sampling"
        return self.model_sampling


def run(node, *args):
    """A V3 node's first output."""
    return node.execute(*args).result[0]


def assert_same(ours, theirs, context):
    """Same length, values within 1e-5 relative (zeros exactly)."""
    theirs = torch.as_tensor(theirs, dtype=torch.float32).cpu()
    assert ours.dtype == torch.float32 and ours.device.type == "cpu", context
    assert ours.shape == theirs.shape, f"{context}: ours {ours.tolist()} vs ComfyUI {theirs.tolist()}"
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=0, msg=lambda m: f"{context}: {m}")


def test_model_tables_match(models):
    for kind, (theirs, ours) in models.items():
        torch.testing.assert_close(ours.sigmas, theirs.sigmas.float(), rtol=1e-6, atol=0, msg=kind)
        assert ours.sigma_min == pytest.approx(float(theirs.sigma_min), rel=1e-6)
        assert ours.sigma_max == pytest.approx(float(theirs.sigma_max), rel=1e-6)


SHARED = [
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
]


def test_every_comfyui_scheduler_is_covered(comfy):
    import comfy.samplers

    assert sorted(comfy.samplers.SCHEDULER_HANDLERS) == sorted(SHARED)


@pytest.mark.parametrize("kind", ["sd1", "flow"])
@pytest.mark.parametrize("name", SHARED)
def test_calculate_sigmas(comfy, models, name, kind):
    import comfy.samplers

    theirs, ours = models[kind]
    # ComfyUI's kl_optimal divides by steps - 1 and returns NaN for one step; ours starts at sigma_max there
    first = 2 if name == "kl_optimal" else 1
    for steps in STEPS[first - 1 :]:
        expected = comfy.samplers.calculate_sigmas(theirs, name, steps)
        assert_same(get_sigmas(name, steps, model=ours), expected, f"{name} {kind} steps={steps}")
    if name == "kl_optimal":
        assert get_sigmas(name, 1, model=ours).tolist() == [pytest.approx(ours.sigma_max), 0.0]


@pytest.mark.parametrize("kind", ["sd1", "flow"])
@pytest.mark.parametrize("name", SHARED)
def test_basic_scheduler_denoise(models, nodes, name, kind):
    """denoise < 1 as BasicScheduler. (At denoise 1 BasicScheduler also cuts to steps + 1 levels, which drops the top
    of a ddim_uniform schedule longer than asked; we return the whole schedule there, as KSampler does.)"""
    theirs, ours = models[kind]
    for steps in (1, 4, 7, 20):
        for denoise in (0.75, 0.5, 0.33, 0.1):
            if name == "kl_optimal" and int(steps / denoise) == 1:
                continue  # ComfyUI's one-step kl_optimal is NaN (see test_calculate_sigmas)
            expected = run(nodes.basic, ModelStub(theirs), name, steps, denoise)
            assert_same(
                get_sigmas(name, steps, model=ours, denoise=denoise), expected, f"{name} {kind} {steps} {denoise}"
            )


@pytest.mark.parametrize("kind", ["sd1", "flow"])
def test_range_nodes(models, nodes, kind):
    _, ours = models[kind]
    low, high = ours.sigma_min, ours.sigma_max
    for steps in STEPS:
        for rho in (7.0, 3.0):
            assert_same(
                get_sigmas("karras", steps, model=ours, rho=rho),
                run(nodes.karras, steps, high, low, rho),
                f"karras {steps}",
            )
        assert_same(
            get_sigmas("exponential", steps, model=ours),
            run(nodes.exponential, steps, high, low),
            f"exponential {steps}",
        )
        for rho in (1.0, 2.5):
            expected = run(nodes.polyexponential, steps, high, low, rho)
            assert_same(get_sigmas("polyexponential", steps, model=ours, rho=rho), expected, f"polyexponential {steps}")


@pytest.mark.parametrize("kind", ["sd1", "flow"])
def test_laplace_node(models, nodes, kind):
    """ComfyUI's laplace returns `steps` levels ending at sigma_min; ours adds the final 0 every schedule has.

    At the median (odd step counts) ComfyUI's float32 grid can miss probability 0.5 by an ulp, where the 1e-5 guard
    inside the log makes the quantile jump by beta * 1e-5 relative; ours lands on the median, mu, exactly.
    """
    _, ours = models[kind]
    for steps in STEPS:
        for mu, beta in ((0.0, 0.5), (-1.0, 1.5)):
            expected = run(nodes.laplace, steps, ours.sigma_max, ours.sigma_min, mu, beta)
            sigmas = get_sigmas("laplace", steps, model=ours, mu=mu, beta=beta)
            assert sigmas[-1] == 0
            assert sigmas.shape == (steps + 1,)
            torch.testing.assert_close(sigmas[:-1], expected.float(), rtol=1e-5 * max(1.0, 1.1 * beta), atol=0)


def test_vp_node(nodes):
    for steps in STEPS:
        for beta_d, beta_min, eps_s in ((19.9, 0.1, 1e-3), (10.0, 0.5, 0.01)):
            expected = run(nodes.vp, steps, beta_d, beta_min, eps_s)
            assert_same(get_sigmas("vp", steps, beta_d=beta_d, beta_min=beta_min, eps_s=eps_s), expected, f"vp {steps}")


@pytest.mark.parametrize("kind", ["sd1", "flow"])
def test_sd_turbo_node(models, nodes, kind):
    theirs, ours = models[kind]
    for steps in range(1, 11):
        assert_same(
            get_sigmas("sd_turbo", steps, model=ours),
            run(nodes.sd_turbo, ModelStub(theirs), steps, 1.0),
            f"sd_turbo {steps}",
        )


@pytest.mark.parametrize("kind", ["sd1", "flow"])
def test_beta_node(models, nodes, kind):
    """Index rounding matches scipy's Beta quantiles. Where a quantile lands exactly on a half timestep (alpha = beta
    = 1 or 2 and a few step counts), ComfyUI's index follows float noise in 1 - linspace and in scipy, which is why
    those parameter pairs are not among these; ours rounds such exact ties half to even (see beta_sampling)."""
    theirs, ours = models[kind]
    for alpha, beta in ((0.6, 0.6), (0.5, 0.7), (2.0, 3.0), (0.8, 1.5)):
        for steps in STEPS:
            expected = run(nodes.beta, ModelStub(theirs), steps, alpha, beta)
            sigmas = get_sigmas("beta", steps, model=ours, alpha=alpha, beta=beta)
            assert_same(sigmas, expected, f"beta {steps} alpha={alpha} beta={beta}")


@pytest.mark.parametrize("model_type", ["SD1", "SDXL", "SVD"])
def test_align_your_steps_node(nodes, model_type):
    for steps in STEPS:
        expected = run(nodes.ays, model_type, steps, 1.0)
        assert_same(get_sigmas(f"ays_{model_type.lower()}", steps), expected, f"ays {model_type} {steps}")


def test_gits_node(nodes):
    """GITS for every published coefficient; ComfyUI's node starts at 2 steps (for 1 it reads the 20-step row)."""
    for coeff in [0.80 + 0.05 * i for i in range(15)]:
        for steps in STEPS[1:]:
            assert_same(
                get_sigmas("gits", steps, coeff=coeff), run(nodes.gits, coeff, steps, 1.0), f"gits {coeff} {steps}"
            )
