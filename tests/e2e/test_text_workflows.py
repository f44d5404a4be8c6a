"""Our text encoder nodes in a real ComfyUI server: CONDITIONING that ComfyUI's own KSampler uses."""
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from diffusion_blocks.devtools.sd_checkpoint import install_checkpoint
from diffusion_blocks.devtools.server import WorkflowError

pytestmark = pytest.mark.e2e
PROMPT = "a (red:1.3) circle left of a \\(blue\\) square, " + ", ".join(f"detail {i}" for i in range(40))


@pytest.fixture(scope="module")
def checkpoint(comfy_server):
    return install_checkpoint(comfy_server.base)


def ksampler_workflow(checkpoint, ours):
    """Native KSampler at 64x64 fed by our Encode Text (ours=True) or ComfyUI's CLIPTextEncode."""
    workflow = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 11, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "karras",
            "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": f"text_{ours}"}},
    }
    if ours:
        workflow["7"] = {"class_type": "DB_LoadTextEncoder",
                         "inputs": {"file": f"checkpoints/{checkpoint}", "second_file": "none", "family": "auto", "dtype": "auto"}}
        encode = lambda text: {"class_type": "DB_EncodeText",  # noqa: E731
                               "inputs": {"text_encoder": ["7", 0], "text": text, "stop_at_clip_layer": 0}}
    else:
        encode = lambda text: {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": text}}  # noqa: E731
    workflow["2"], workflow["3"] = encode(PROMPT), encode("")
    return workflow


def test_our_conditioning_drives_comfyuis_ksampler_like_its_own(comfy_server, checkpoint):
    latents = []
    for ours in (True, False):
        path, = comfy_server.output_files(comfy_server.run(ksampler_workflow(checkpoint, ours)), "latents")
        latents.append(load_file(path)["latent_tensor"])
    assert torch.isfinite(latents[0]).all()
    torch.testing.assert_close(latents[0], latents[1], rtol=1e-3, atol=1e-3 * latents[1].abs().max().item())


def test_show_tokens_draws_the_windows_of_a_long_prompt(comfy_server):
    workflow = {
        "1": {"class_type": "DB_ShowTokens", "inputs": {"text": PROMPT, "width": 1024}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "tokens"}},
    }
    path, = comfy_server.output_images(comfy_server.run(workflow))
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape[1] == 1024 and pixels.shape[0] > 100 and pixels.std() > 10


def test_an_infinite_weight_is_a_clear_error(comfy_server, checkpoint):
    workflow = ksampler_workflow(checkpoint, ours=True)
    workflow["2"]["inputs"]["text"] = "a (red:inf) circle"
    with pytest.raises(WorkflowError, match="weight"):
        comfy_server.run(workflow)
    assert comfy_server.get("/system_stats")
