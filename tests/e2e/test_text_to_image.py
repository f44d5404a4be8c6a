"""The main job in a real ComfyUI server: text to image with the bundled shapes model, reproducible, equal to the
in-process pipeline, and scripts/generate.py end to end."""
import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_blocks.devtools.paths import PACK_ROOT

pytestmark = pytest.mark.e2e
WORKFLOWS = PACK_ROOT / "example_workflows"
BUNDLED = PACK_ROOT / "models" / "diffusion_blocks_shapes.safetensors"
QUICK_STEPS = 6  # the variants below: the same pipeline, fewer steps
SCALE = 4  # the workflow enlarges the 64x64 picture 4x, nearest-exact


def load(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def workflow():
    return load(WORKFLOWS / "api" / "text_to_image.json")


def variant(workflow, seed, steps=QUICK_STEPS):
    workflow = copy.deepcopy(workflow)
    workflow["9"]["inputs"]["seed"] = seed
    workflow["7"]["inputs"]["steps"] = steps
    return workflow


def png(server, workflow):
    """The saved PNG's bytes and its pixels (H, W, 3) uint8."""
    path, = server.output_images(server.run(workflow))
    return path.read_bytes(), np.asarray(Image.open(path).convert("RGB"))


def test_ui_workflow_is_the_api_twin(comfy_server, workflow):
    from diffusion_blocks.devtools.workflow_format import ui_to_api

    queued = ui_to_api(load(WORKFLOWS / "text_to_image.json"), comfy_server.get("/object_info"))
    assert queued == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in workflow.items()}


def test_workflow_saves_the_prompted_picture_enlarged(comfy_server, workflow):
    _, pixels = png(comfy_server, workflow)
    assert pixels.shape == (64 * SCALE, 64 * SCALE, 3)
    blocks = pixels.reshape(64, SCALE, 64, SCALE, 3)
    assert (blocks == blocks[:, :1, :, :1]).all(), "each pixel shown as a 4x4 block"
    assert pixels.std() > 20, "shapes on a background, not a flat picture"
    corners = pixels[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.min() > 180, f"the prompt's white background, got corners {corners.tolist()}"
    for half, channel in ((pixels[:, :128], 0), (pixels[:, 128:], 2)):  # a red circle left of a blue square
        vivid = half[half.max(-1).astype(int) - half.min(-1) > 80]
        assert len(vivid) > 200 and (vivid.argmax(1) == channel).mean() > 0.8


def test_same_seed_same_png_other_seed_other_png(comfy_server, workflow):
    # seed 1 in between: ComfyUI keeps only the last prompt's results, so seed 0 is sampled again
    (a, first), (b, other), (c, _) = (png(comfy_server, variant(workflow, seed)) for seed in (0, 1, 0))
    assert a == c, "the same seed gives the same PNG, byte for byte"
    assert a != b and np.abs(first.astype(int) - other.astype(int)).max() > 50


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "euler_ancestral"])
def test_server_picture_equals_the_in_process_pipeline(comfy_server, workflow, sampler):
    from diffusion_blocks.networks import load_text_encoder, load_unet
    from diffusion_blocks.pipeline import text_to_image

    queued = variant(workflow, seed=3)
    queued["8"]["inputs"]["sampler"] = sampler
    _, served = png(comfy_server, queued)
    prompt, threads = workflow["3"]["inputs"]["text"], torch.get_num_threads()
    torch.set_num_threads(1)  # one thread is quicker than two fighting on a busy small machine
    try:
        expected = text_to_image(load_unet(BUNDLED), load_text_encoder(BUNDLED), [prompt], [3], steps=QUICK_STEPS,
                                 sampler=sampler, scheduler="karras", cfg=5.0)[0].numpy()
    finally:
        torch.set_num_threads(threads)
    difference = np.abs(served[::SCALE, ::SCALE].astype(int) - expected.astype(int))
    assert difference.max() <= 1, f"{(difference > 1).sum()} values differ by more than 1/255"


def test_generate_script_writes_one_png_per_prompt(tmp_path, comfy_server, workflow):
    prompts = ["a red circle left of a blue square on a white background",
               "a small green star in the top left corner on a black background"]
    command = [sys.executable, str(PACK_ROOT / "scripts" / "generate.py"), "--steps", "3", "--seed", "2",
               "--sampler", "euler", "--scheduler", "exponential", "--out-dir", str(tmp_path)]
    for prompt in prompts:
        command += ["--prompt", prompt]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    paths = [tmp_path / "000.png", tmp_path / "001.png"]
    assert result.stdout.split() == [str(p) for p in paths]
    first, second = (np.asarray(Image.open(p).convert("RGB")) for p in paths)
    assert first.shape == second.shape == (256, 256, 3)
    assert np.abs(first.astype(int) - second.astype(int)).mean() > 20, "a white and a black background"
    from diffusion_blocks.devtools.workflow_format import text_to_image_workflow

    again, _ = png(comfy_server, text_to_image_workflow(workflow, prompts[0], 2, 3, "euler", "exponential", 5.0))
    assert again == paths[0].read_bytes(), "the same seed in another ComfyUI process: the same PNG, byte for byte"


@pytest.mark.parametrize("option", ["--sampler", "--scheduler"])
def test_generate_script_refuses_unknown_names(option):
    command = [sys.executable, str(PACK_ROOT / "scripts" / "generate.py"), "--prompt", "x", option, "no_such_name"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and f"unknown {option[2:]} 'no_such_name'" in result.stderr, result.stderr
