"""Our schedules and samplers driving a native SD1.x model in a real ComfyUI server.

The checkpoint has SD1.x's exact architecture with random weights (devtools/sd_checkpoint.py). The
same workflow runs once with our SAMPLER and once with ComfyUI's sampler of the same name (KSamplerSelect);
the latents they save must agree. (Stochastic samplers draw different step noise by design: the pack's continue the
seed's generator after the start noise, ComfyUI 0.3.75 draws the start noise again and 0.33 uses seed + 1; their
parity with ComfyUI's formulas is checked in-process on shared noise, tests/in_comfy.)
"""
import threading

import pytest
import torch
from safetensors.torch import load_file

from diffusion_blocks.devtools.sd_checkpoint import install_checkpoint
from diffusion_blocks.devtools.server import WorkflowError, WorkflowInterrupted

pytestmark = pytest.mark.e2e
STEPS = 4


@pytest.fixture(scope="module")
def checkpoint(comfy_server):
    return install_checkpoint(comfy_server.base)


def text_to_image(checkpoint, sampler_node, steps=STEPS, seed=7, sigmas_node=None, prefix="sampler_parity"):
    """SD1.x text-to-image at 64x64 through SamplerCustom, saving the latent and the decoded image."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle left of a blue square", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": sigmas_node or {"class_type": "DB_KarrasSchedule",
                             "inputs": {"steps": steps, "denoise": 1.0, "rho": 7.0, "sigma_max": 14.614642,
                                        "sigma_min": 0.0291675, "model": ["1", 0]}},
        "6": sampler_node,
        "7": {"class_type": "SamplerCustom", "inputs": {
            "model": ["1", 0], "add_noise": True, "noise_seed": seed, "cfg": 5.0, "positive": ["2", 0],
            "negative": ["3", 0], "sampler": ["6", 0], "sigmas": ["5", 0], "latent_image": ["4", 0]}},
        "8": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": prefix}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": prefix}},
    }


def ours(name):
    return {"class_type": "DB_Sampler", "inputs": {"sampler": name}}


def comfyui(name):
    return {"class_type": "KSamplerSelect", "inputs": {"sampler_name": name}}


def saved_latent(server, history):
    path, = server.output_files(history, "latents")
    return load_file(path)["latent_tensor"]


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m", "lms", "uni_pc"])
def test_our_sampler_equals_comfyuis_on_a_native_sd1_model(comfy_server, checkpoint, name):
    def run(sampler_node):
        workflow = text_to_image(checkpoint, sampler_node)
        if name == "uni_pc":  # ours ends on sigma_min with the denoising jump where ComfyUI's integrates to 0.001
            workflow["11"] = {"class_type": "DB_SplitSigmasAtStep", "inputs": {"sigmas": ["5", 0], "step": STEPS - 1}}
            workflow["7"]["inputs"]["sigmas"] = ["11", 0]  # the 'high' part: every level above 0 (equal there)
        return saved_latent(comfy_server, comfy_server.run(workflow))

    a, b = run(ours(name)), run(comfyui(name))
    assert torch.isfinite(a).all() and a.shape == (1, 4, 8, 8)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


def test_same_seed_same_image_other_seed_other_image(comfy_server, checkpoint):
    runs = [saved_latent(comfy_server, comfy_server.run(text_to_image(checkpoint, ours("euler_ancestral"), seed=s)))
            for s in (3, 3, 4)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])


def test_stop_button_interrupts_within_a_step_and_the_next_prompt_runs(comfy_server, checkpoint):
    long_run = text_to_image(checkpoint, ours("euler"), steps=200)
    progress = []

    def on_message(message):
        if message["type"] == "progress":
            progress.append(message["data"]["value"])
            if len(progress) == 2:
                threading.Thread(target=comfy_server.interrupt).start()

    with pytest.raises(WorkflowInterrupted):
        comfy_server.run(long_run, on_message=on_message)
    assert 2 <= max(progress) <= 4, f"stopped within a step or two of the request, got {progress}"
    history = comfy_server.run(text_to_image(checkpoint, ours("euler")))
    assert comfy_server.output_images(history)


def test_a_one_level_schedule_fails_clearly_in_the_sampler_and_the_server_carries_on(comfy_server, checkpoint):
    workflow = text_to_image(checkpoint, ours("euler"))
    workflow["11"] = {"class_type": "DB_SplitSigmasAtStep", "inputs": {"sigmas": ["5", 0], "step": 0}}
    workflow["7"]["inputs"]["sigmas"] = ["11", 0]  # the 'high' part: just the first noise level
    with pytest.raises(WorkflowError, match="sigmas: a sampler needs at least 2 noise levels"):
        comfy_server.run(workflow)
    assert comfy_server.output_images(comfy_server.run(text_to_image(checkpoint, ours("euler"))))


@pytest.mark.parametrize("text", ["nan, 0", "14.6, 1e999, 0"])
def test_non_finite_sigmas_are_refused_where_they_are_typed(comfy_server, checkpoint, text):
    sigmas = {"class_type": "DB_SigmasFromText", "inputs": {"text": text}}
    with pytest.raises(WorkflowError, match="text"):
        comfy_server.run(text_to_image(checkpoint, ours("euler"), sigmas_node=sigmas))


def test_an_unknown_sampler_name_is_refused_before_running(comfy_server, checkpoint):
    with pytest.raises(WorkflowError, match="eulr"):
        comfy_server.run(text_to_image(checkpoint, ours("eulr")))


def test_compare_samplers_example_puts_four_samplers_side_by_side(comfy_server, checkpoint):
    import json

    import numpy as np
    from PIL import Image

    from diffusion_blocks.devtools.paths import PACK_ROOT

    workflow = json.loads((PACK_ROOT / "example_workflows" / "api" / "compare_samplers.json").read_text())
    workflow["1"]["inputs"]["ckpt_name"] = checkpoint
    workflow["4"]["inputs"].update(width=64, height=64)
    for node in workflow.values():  # the same budget of model calls, scaled down for the CPU
        if node["class_type"] == "DB_KarrasSchedule":
            node["inputs"]["steps"] //= 5
    workflow["50"]["inputs"]["cell_size"] = 128
    grid, = comfy_server.output_images(comfy_server.run(workflow))
    pixels = np.asarray(Image.open(grid).convert("RGB"), dtype=np.float32)
    padding, cell = 8, 128
    assert pixels.shape[1] == padding + 4 * (cell + padding)
    cells = [pixels[padding:padding + cell, padding + k * (cell + padding):padding + k * (cell + padding) + cell] for k in range(4)]
    for k in range(4):
        assert cells[k].std() > 5, f"cell {k} is not blank"
        for j in range(k):
            assert np.abs(cells[k] - cells[j]).mean() > 1, f"samplers {j} and {k} gave the same picture"
