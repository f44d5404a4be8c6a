"""Text to image with the pack's own blocks in a real ComfyUI server: Load U-Net -> Empty Latent -> Sample ->
Latent to Image -> SaveImage, on a tiny random pixel-space U-Net steered by the CLIP-L text encoder of the random
SD1.x checkpoint (devtools/sd_checkpoint.py)."""
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_blocks.devtools.sd_checkpoint import install_checkpoint
from diffusion_blocks.devtools.server import WorkflowError, WorkflowInterrupted

from diffusion_blocks.networks.prediction import TrainingSpec
from diffusion_blocks.networks.unet import UNet, UNetConfig
from diffusion_blocks.networks.unet_loading import save_unet

pytestmark = pytest.mark.e2e
UNET_FILE = "tiny_pixels_clip_l.safetensors"
TINY = UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1),
                  transformer_depth=(0, 1), transformer_depth_output=(1, 1, 0, 0), context_dim=768, num_heads=-1,
                  head_channels=32)
SIZE = 32


@pytest.fixture(scope="module")
def models(comfy_server):
    """The SD1.x checkpoint (for its text encoder) and a tiny pixel-space U-Net of 768-wide text, in the server's folders."""
    torch.manual_seed(0)
    unet = UNet(TINY).eval()
    with torch.no_grad():
        for parameter in unet.parameters():  # no zero-initialised layer: the picture depends on seed and prompt
            parameter.add_(0.05 * torch.randn_like(parameter))
    save_unet(unet, comfy_server.base / "models" / "diffusion_models" / UNET_FILE, TrainingSpec(latent_scale=1.0))
    return install_checkpoint(comfy_server.base)


def text_to_image(checkpoint, seed=5, steps=4, size=SIZE, prefix="db_sample"):
    encode = lambda text: {"class_type": "DB_EncodeText",  # noqa: E731
                           "inputs": {"text_encoder": ["2", 0], "text": text, "stop_at_clip_layer": 0}}
    return {
        "1": {"class_type": "DB_LoadUNet", "inputs": {"unet_name": f"diffusion_models/{UNET_FILE}",
                                                      "weight_dtype": "default", "prediction": "auto", "zero_snr": "auto"}},
        "2": {"class_type": "DB_LoadTextEncoder", "inputs": {"file": f"checkpoints/{checkpoint}", "second_file": "none",
                                                             "family": "auto", "dtype": "auto"}},
        "3": encode("a red circle left of a blue square"),
        "4": encode(""),
        "5": {"class_type": "DB_EmptyLatent", "inputs": {"unet": ["1", 0], "width": size, "height": size, "batch_size": 1}},
        "6": {"class_type": "DB_KarrasSchedule", "inputs": {"steps": steps, "denoise": 1.0, "rho": 7.0,
                                                            "sigma_max": 14.614642, "sigma_min": 0.0291675}},
        "7": {"class_type": "DB_Sampler", "inputs": {"sampler": "euler_ancestral"}},
        "8": {"class_type": "DB_Sample", "inputs": {
            "unet": ["1", 0], "sampler": ["7", 0], "sigmas": ["6", 0], "latent": ["5", 0], "seed": seed, "cfg": 4.0,
            "positive": ["3", 0], "negative": ["4", 0]}},
        "9": {"class_type": "DB_LatentToImage", "inputs": {"latent": ["8", 0]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": prefix}},
    }


def png(server, workflow):
    path, = server.output_images(server.run(workflow))
    return path.read_bytes(), np.asarray(Image.open(path).convert("RGB"))


def test_same_seed_same_png_other_seed_other_png(comfy_server, models):
    (a, pixels), (b, _), (c, _) = (png(comfy_server, text_to_image(models, seed=s)) for s in (5, 5, 6))
    assert pixels.shape == (SIZE, SIZE, 3) and pixels.std() > 5
    assert a == b and a != c


def test_stop_button_interrupts_sampling_and_the_next_prompt_runs(comfy_server, models):
    steps, progress = 1000, []

    def on_message(message):
        if message["type"] == "progress" and message["data"].get("node") == "8":
            progress.append(message["data"]["value"])
            if len(progress) == 2:
                threading.Thread(target=comfy_server.interrupt).start()

    with pytest.raises(WorkflowInterrupted):
        comfy_server.run(text_to_image(models, steps=steps, size=64, prefix="stopped"), on_message=on_message)
    assert 2 <= max(progress) < steps / 2, f"stopped soon after the request, got {progress[-5:]}"
    assert png(comfy_server, text_to_image(models))[1].shape == (SIZE, SIZE, 3)


def test_a_latent_of_the_wrong_kind_fails_naming_the_input(comfy_server, models):
    workflow = text_to_image(models)
    workflow["11"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    workflow["8"]["inputs"]["latent"] = ["11", 0]
    with pytest.raises(WorkflowError, match=r"latent: shape \(1, 4, 8, 8\) does not fit a U-Net of 3-channel latents"):
        comfy_server.run(workflow)


def test_a_schedule_split_over_two_samples_gives_the_picture_of_one(comfy_server, models):
    whole = text_to_image(models, steps=6, prefix="db_whole")
    halves = text_to_image(models, steps=6, prefix="db_halves")
    halves["11"] = {"class_type": "DB_SplitSigmasAtStep", "inputs": {"sigmas": ["6", 0], "step": 3}}
    halves["8"]["inputs"]["sigmas"] = ["11", 0]  # the high part first
    halves["12"] = {"class_type": "DB_Sample", "inputs": {**halves["8"]["inputs"], "sigmas": ["11", 1],
                                                          "latent": ["8", 0], "seed": 99}}
    halves["9"]["inputs"]["latent"] = ["12", 0]
    (_, one), (_, two) = png(comfy_server, whole), png(comfy_server, halves)  # the PNGs' metadata name their workflows
    assert one.std() > 5 and np.array_equal(one, two)
