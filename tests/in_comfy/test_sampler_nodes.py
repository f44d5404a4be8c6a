"""Sampler nodes in-process: native SAMPLER objects that carry our functions and the chosen options."""
import pytest
import torch

from harness.nodes import run_node

pytestmark = pytest.mark.usefixtures("comfy")
SAMPLER_NODE_IDS = ("DB_Sampler", "DB_EulerSampler", "DB_AncestralSampler", "DB_SDESampler",
                    "DB_MultistepSampler", "DB_SASolverSampler", "DB_AdaptiveSampler")


def widget_defaults(node):
    return {item.id: item.default for item in node.GET_SCHEMA().inputs if item.id != "sampler"}


@pytest.mark.parametrize("node_id", SAMPLER_NODE_IDS)
def test_every_choice_of_every_sampler_node_is_a_native_sampler(pack_nodes, node_id):
    import comfy.samplers
    from diffusion_blocks.samplers import SAMPLERS, sampler_options

    node = pack_nodes[node_id]
    schema = node.GET_SCHEMA()
    names = schema.inputs[0].options if schema.inputs and schema.inputs[0].id == "sampler" else [None]
    for name in names:
        sampler, = run_node(node, **({"sampler": name} if name else {}), **widget_defaults(node))
        assert isinstance(sampler, comfy.samplers.KSAMPLER)
        chosen = name or next(n for n in SAMPLERS if SAMPLERS[n] is sampler.sampler_function)
        assert sampler.sampler_function is SAMPLERS[chosen]
        assert set(sampler.extra_options) <= set(sampler_options(chosen))


def test_widgets_reach_the_sampler_under_its_own_option_names(pack_nodes):
    node = pack_nodes["DB_MultistepSampler"]
    lms, = run_node(node, sampler="lms", order=2)
    deis, = run_node(node, sampler="deis", order=2)
    default, = run_node(node, sampler="deis", order=0)
    dpmpp_2m, = run_node(node, sampler="dpmpp_2m", order=2)
    assert lms.extra_options == {"order": 2} and deis.extra_options == {"max_order": 2}
    assert default.extra_options == {} and dpmpp_2m.extra_options == {}
    euler, = run_node(pack_nodes["DB_EulerSampler"], sampler="euler", s_churn=0.5, s_tmin=0.0, s_tmax=5000.0, s_noise=1.0)
    assert euler.extra_options["s_tmax"] == float("inf") and euler.extra_options["s_churn"] == 0.5


def test_our_sampler_inside_comfyui_ksampler_equals_comfyui_sampler_on_the_same_denoiser(pack_nodes):
    """ComfyUI's KSAMPLER hands our function exactly the k-diffusion call; the result equals its own sampler's."""
    import comfy.samplers
    from diffusion_blocks.devtools.gmm import GaussianMixture

    mixture = GaussianMixture(dim=8, seed=2)
    sigmas = torch.tensor([14.6, 7.0, 3.0, 1.2, 0.4, 0.1, 0.0], dtype=torch.float64)
    x = torch.randn(2, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 14.6
    ours, = run_node(pack_nodes["DB_Sampler"], sampler="dpmpp_2m")
    theirs = comfy.samplers.ksampler("dpmpp_2m")
    a = ours.sampler_function(mixture, x, sigmas, extra_args={"seed": 3}, callback=None, disable=True, **ours.extra_options)
    b = theirs.sampler_function(mixture, x, sigmas, extra_args={}, callback=None, disable=True, **theirs.extra_options)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
