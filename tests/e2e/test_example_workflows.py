"""The example workflows run in a real ComfyUI server, each showing what it promises; each UI file is its API twin.

The bundled shapes model runs at the shipped settings. The SD1.x workflows name a placeholder checkpoint; the
random-weight SD1.x checkpoint (devtools/sd_checkpoint.py) is installed under that name and the latent is
shrunk to 64x64 pixels, with fewer steps, to stay fast on the CPU.
"""
import json

import numpy as np
import pytest
from PIL import Image

from diffusion_blocks.devtools.paths import PACK_ROOT
from diffusion_blocks.devtools.sd_checkpoint import install_checkpoint

pytestmark = pytest.mark.e2e
WORKFLOWS = PACK_ROOT / "example_workflows"
SD1_PLACEHOLDER = "v1-5-pruned-emaonly.safetensors"
PADDING = 8  # views/grid.py: around every cell
EXAMPLES = ["compare_samplers_shapes", "compare_equal_cost_shapes", "compare_schedules_shapes", "fewer_steps_shapes",
            "denoising_trajectory_shapes",
            "image_to_image_shapes", "sd1_our_unet_text_encoder", "sd1_sampler_custom_advanced", "sd1_lora_controlnet"]
# Examples that also need another extension, which this test server does not have: each runs in its own test.
NEED_EXTENSIONS = {"text_to_image_distributed": ({"DistributedSeed", "DistributedCollector"}, "test_distributed.py")}


def load_api(name):
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


def pictures(server, workflow):
    """The images a workflow saves, as (H, W, 3) float arrays in 0..255, in node order."""
    return [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) for p in server.output_images(server.run(workflow))]


def caption_height(cell):
    """The caption strip under each cell of views/grid.py."""
    return max(12, min(18, cell // 12)) + 10


def grid_shape(rows, columns, cell):
    return (PADDING + rows * (cell + caption_height(cell) + PADDING), PADDING + columns * (cell + PADDING), 3)


def cells(grid, rows, columns, cell):
    """The pictures of a grid, row by row."""
    return [grid[y:y + cell, x:x + cell]
            for y in (PADDING + r * (cell + caption_height(cell) + PADDING) for r in range(rows))
            for x in (PADDING + c * (cell + PADDING) for c in range(columns))]


def vivid(picture):
    """Mask of the strongly coloured pixels: the shapes on a white, gray or black background."""
    return picture.max(-1) - picture.min(-1) > 80


def overlap(a, b):
    """Intersection over union of two masks."""
    return (a & b).sum() / max(1, (a | b).sum())


def dominant(picture, channel):
    """Whether `channel` (0 red, 1 green, 2 blue) is the strongest in most of the picture's vivid pixels."""
    pixels = picture[vivid(picture)]
    return len(pixels) > 50 and (pixels.argmax(1) == channel).mean() > 0.6


def shows_red_left_blue_right(picture):
    """'a red circle left of a blue square': red in the left half, blue in the right half."""
    half = picture.shape[1] // 2
    return dominant(picture[:, :half], 0) and dominant(picture[:, half:], 2)


def assert_all_differ(pictures):
    for k in range(len(pictures)):
        for j in range(k):
            assert np.abs(pictures[k] - pictures[j]).mean() > 1, f"pictures {j} and {k} are the same"


def test_compare_samplers_shapes_four_samplers_draw_the_prompt_each_their_own_way(comfy_server):
    workflow = load_api("compare_samplers_shapes")
    cell = workflow["50"]["inputs"]["cell_size"]
    grid, = pictures(comfy_server, workflow)
    assert grid.shape == grid_shape(1, 4, cell)
    shown = cells(grid, 1, 4, cell)
    for k, picture in enumerate(shown):
        assert shows_red_left_blue_right(picture), f"sampler {k} did not draw the prompt"
    assert_all_differ(shown)


def test_compare_equal_cost_shapes_gives_every_sampler_and_schedule_the_same_calls(comfy_server):
    workflow = load_api("compare_equal_cost_shapes")
    cell = workflow["50"]["inputs"]["cell_size"]
    grid, = pictures(comfy_server, workflow)
    assert grid.shape == grid_shape(4, 2, cell)  # euler, heun, dpmpp_2m, dpmpp_2s_ancestral x karras, exponential
    shown = cells(grid, 4, 2, cell)
    for k in (0, 1, 4, 5):  # the one-call-per-step samplers at 20 steps draw the prompt on both schedules
        assert shows_red_left_blue_right(shown[k]), f"cell {k} did not draw the prompt"
    for column in (0, 1):  # at 20 calls, heun's 10 steps and the ancestral sampler's own noise show
        assert_all_differ([shown[column], shown[2 + column], shown[6 + column]])


def test_compare_schedules_shapes_plots_four_schedules_and_their_pictures_differ(comfy_server):
    workflow = load_api("compare_schedules_shapes")
    cell = workflow["52"]["inputs"]["cell_size"]
    plot, grid = pictures(comfy_server, workflow)
    assert plot.shape == (workflow["50"]["inputs"]["height"], workflow["50"]["inputs"]["width"], 3) and plot.std() > 10
    assert grid.shape == grid_shape(1, 4, cell)
    shown = cells(grid, 1, 4, cell)
    for k, picture in enumerate(shown):
        assert shows_red_left_blue_right(picture), f"schedule {k} did not draw the prompt"
    assert_all_differ(shown)


def test_fewer_steps_shapes_the_fitted_schedule_comes_closer_to_twenty_calls_than_karras(comfy_server):
    workflow = load_api("fewer_steps_shapes")
    cell = workflow["52"]["inputs"]["cell_size"]
    plot, grid = pictures(comfy_server, workflow)
    assert plot.std() > 10
    karras_8, fitted_8, karras_20 = cells(grid, 1, 3, cell)
    assert shows_red_left_blue_right(fitted_8) and shows_red_left_blue_right(karras_20)
    assert np.abs(fitted_8 - karras_20).mean() < 0.7 * np.abs(karras_8 - karras_20).mean()


def test_denoising_trajectory_shapes_noise_clears_step_by_step(comfy_server):
    workflow = load_api("denoising_trajectory_shapes")
    inputs = workflow["12"]["inputs"]
    shown, cell = inputs["steps_shown"], inputs["cell_size"]
    grid, = pictures(comfy_server, workflow)
    assert grid.shape == grid_shape(2, shown, cell)
    noisy, final = cells(grid, 2, shown, cell)[:shown], cells(grid, 2, shown, cell)[-1]
    distances = [np.abs(picture - final).mean() for picture in noisy]
    assert distances[0] > 40 and distances[-1] < 10, distances
    assert all(b < a + 1 for a, b in zip(distances, distances[1:])), f"the noise does not clear step by step: {distances}"


def test_image_to_image_shapes_changes_the_colour_and_keeps_the_picture(comfy_server):
    workflow = load_api("image_to_image_shapes")
    cell = workflow["50"]["inputs"]["cell_size"]
    grid, = pictures(comfy_server, workflow)
    assert grid.shape == grid_shape(1, 2, cell)
    source, edited = cells(grid, 1, 2, cell)
    half = cell // 2
    assert dominant(source[:, :half], 0) and dominant(edited[:, :half], 1), "the circle did not turn from red to green"
    workflow["17"]["inputs"].update(latent=["5", 0], sigmas=["10", 0], seed=8)  # the edit prompt from pure noise
    _, independent = cells(pictures(comfy_server, workflow)[0], 1, 2, cell)
    assert np.abs(edited - source).mean() < np.abs(independent - source).mean()
    assert overlap(vivid(edited), vivid(source)) > max(0.6, overlap(vivid(independent), vivid(source))), "shapes moved"


@pytest.mark.parametrize("name", ["sd1_our_unet_text_encoder", "sd1_sampler_custom_advanced"])
def test_sd1_workflow_runs_on_an_sd1_checkpoint(comfy_server, name):
    install_checkpoint(comfy_server.base, SD1_PLACEHOLDER)
    workflow = load_api(name)
    for node in workflow.values():
        if node["class_type"] == "EmptyLatentImage":
            assert (node["inputs"]["width"], node["inputs"]["height"]) == (512, 512)  # as shipped: SD1.x's size
            node["inputs"].update(width=64, height=64)
        if node["class_type"] == "DB_KarrasSchedule":
            node["inputs"]["steps"] = 4
    image, = pictures(comfy_server, workflow)
    assert image.shape == (64, 64, 3) and image.std() > 0


def test_every_example_has_a_ui_file_and_an_api_twin():
    assert {p.stem for p in WORKFLOWS.glob("*.json")} == {p.stem for p in (WORKFLOWS / "api").glob("*.json")}
    assert set(EXAMPLES) <= {p.stem for p in WORKFLOWS.glob("*.json")}


def test_only_the_declared_examples_need_other_extensions(comfy_server):
    known = set(comfy_server.get("/object_info"))
    missing = {path.stem: {node["class_type"] for node in json.loads(path.read_text()).values()} - known
               for path in (WORKFLOWS / "api").glob("*.json")}
    assert {name: nodes for name, nodes in missing.items() if nodes} == {k: v[0] for k, v in NEED_EXTENSIONS.items()}
    for name, (_, test_file) in NEED_EXTENSIONS.items():
        assert name in (PACK_ROOT / "tests" / "e2e" / test_file).read_text(), f"{test_file} does not run {name}"


@pytest.mark.parametrize("name", EXAMPLES)
def test_ui_workflow_queues_its_api_twin(comfy_server, name):
    from diffusion_blocks.devtools.workflow_format import ui_to_api

    queued = ui_to_api(json.loads((WORKFLOWS / f"{name}.json").read_text()), comfy_server.get("/object_info"))
    assert queued == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in load_api(name).items()}
