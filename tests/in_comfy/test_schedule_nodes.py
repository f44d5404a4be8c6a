"""Schedule, sigma and plot nodes in a real (in-process) ComfyUI: schemas, results, errors."""
import pytest
import torch

from harness.nodes import run_node

pytestmark = pytest.mark.usefixtures("comfy")


def test_every_node_has_prefix_category_description_and_tooltips(pack_nodes):
    assert len(pack_nodes) >= 20
    for node_id, cls in pack_nodes.items():
        schema = cls.GET_SCHEMA()
        assert node_id.startswith("DB_")
        assert schema.category.startswith("diffusion_blocks/")
        assert schema.description and schema.display_name
        for item in schema.inputs:
            assert item.tooltip, f"{node_id}.{item.id} has no tooltip"


def test_karras_node_equals_comfyui_karras_node(pack_nodes):
    from comfy_extras.nodes_custom_sampler import KarrasScheduler

    ours, = run_node(pack_nodes["DB_KarrasSchedule"], steps=12, denoise=1.0, rho=7.0, sigma_max=14.6, sigma_min=0.03)
    theirs, = KarrasScheduler.execute(steps=12, sigma_max=14.6, sigma_min=0.03, rho=7.0).result
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("schedule", ["simple", "sgm_uniform", "normal", "ddim_uniform"])
@pytest.mark.parametrize("denoise", [1.0, 0.6])
@pytest.mark.parametrize("sampling", ["sd1_sampling", "flow_sampling"])
def test_table_schedule_from_a_native_model_equals_comfyui(pack_nodes, native_model, request, schedule, denoise, sampling):
    """denoise 1: the whole schedule, as ComfyUI's KSampler computes it (calculate_sigmas); denoise < 1:
    the last steps + 1 levels of a longer schedule, as ComfyUI's BasicScheduler does."""
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import BasicScheduler

    model_sampling = request.getfixturevalue(sampling)
    model = native_model(model_sampling)
    ours, = run_node(pack_nodes["DB_TimestepSpacingSchedule"], schedule=schedule, steps=15, denoise=denoise, model=model)
    if denoise == 1.0:
        theirs = comfy.samplers.calculate_sigmas(model_sampling, schedule, 15)
    else:
        theirs, = BasicScheduler.execute(model=model, scheduler=schedule, steps=15, denoise=denoise).result
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-5, atol=1e-7)


def test_range_comes_from_the_model_when_connected(pack_nodes, native_model, flow_sampling):
    model = native_model(flow_sampling)
    sigmas, = run_node(pack_nodes["DB_KarrasSchedule"], steps=8, denoise=1.0, rho=7.0, sigma_max=14.6, sigma_min=0.03, model=model)
    assert sigmas[0].item() == pytest.approx(float(flow_sampling.sigma_max), rel=1e-6)
    assert sigmas[-2].item() == pytest.approx(float(flow_sampling.sigma_min), rel=1e-5)
    assert sigmas[-1].item() == 0.0


def test_every_schedule_by_name_gives_descending_sigmas(pack_nodes):
    node = pack_nodes["DB_Schedule"]
    names = node.GET_SCHEMA().inputs[0].options
    for name in names:
        sigmas, = run_node(node, schedule=name, steps=10, denoise=1.0, sigma_max=14.614642, sigma_min=0.0291675)
        assert sigmas.dtype == torch.float32 and sigmas.ndim == 1, name
        assert torch.all(sigmas[:-1] > sigmas[1:]), f"{name}: {sigmas}"


def test_sigma_arithmetic_nodes_round_trip(pack_nodes):
    sigmas, = run_node(pack_nodes["DB_SigmasFromText"], text="10, 5, 2.5\n1, 0.5 0")
    assert sigmas.tolist() == [10.0, 5.0, 2.5, 1.0, 0.5, 0.0]
    high, low = run_node(pack_nodes["DB_SplitSigmasAtStep"], sigmas=sigmas, step=2)
    assert high.tolist() == [10.0, 5.0, 2.5] and low.tolist() == [2.5, 1.0, 0.5, 0.0]
    joined, = run_node(pack_nodes["DB_ConcatSigmas"], first=high, second=low)
    assert joined.tolist() == sigmas.tolist()
    flipped, = run_node(pack_nodes["DB_FlipSigmas"], sigmas=sigmas)
    assert flipped[0].item() == pytest.approx(1e-4) and flipped[1:].tolist() == [0.5, 1.0, 2.5, 5.0, 10.0]
    doubled, = run_node(pack_nodes["DB_MultiplySigmas"], sigmas=sigmas, factor=2.0)
    assert doubled.tolist() == [20.0, 10.0, 5.0, 2.0, 1.0, 0.0]


@pytest.mark.parametrize("text", ["10, five, 1", "1, 2, 3", ""])
def test_sigmas_from_text_rejects_bad_text_naming_the_input(pack_nodes, text):
    with pytest.raises(ValueError, match="text"):
        run_node(pack_nodes["DB_SigmasFromText"], text=text)


def test_plot_node_draws_a_picture_of_every_input(pack_nodes):
    node = pack_nodes["DB_PlotSigmas"]
    a, = run_node(pack_nodes["DB_KarrasSchedule"], steps=20, denoise=1.0, rho=7.0, sigma_max=14.6, sigma_min=0.03)
    b, = run_node(pack_nodes["DB_ExponentialSchedule"], steps=20, denoise=1.0, sigma_max=14.6, sigma_min=0.03)
    image, = run_node(node, sigmas_1=a, sigmas_2=b, labels="karras, exponential", log_scale=True, width=768, height=512)
    assert image.shape == (1, 512, 768, 3) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    blue = ((image[0, ..., 2] > 0.6) & (image[0, ..., 0] < 0.3)).sum()
    red = ((image[0, ..., 0] > 0.7) & (image[0, ..., 1] < 0.3)).sum()
    assert blue > 500 and red > 500, "both lines are drawn in their legend colours"


def test_plot_node_names_an_empty_schedule(pack_nodes):
    with pytest.raises(ValueError, match="sigmas_2"):
        run_node(pack_nodes["DB_PlotSigmas"], sigmas_1=torch.tensor([1.0, 0.0]), sigmas_2=torch.tensor([]),
                 labels="", log_scale=True, width=512, height=512)
