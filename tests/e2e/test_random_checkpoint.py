"""The random-weight SD1.x test checkpoint: ComfyUI detects it as SD1.5 and a real server samples from it."""
import gc
import logging
import time

import numpy as np
import pytest
from PIL import Image

from diffusion_blocks.devtools.sd_checkpoint import (CLIP_PREFIX, PARAMETERS, UNET_PREFIX, VAE_PREFIX, install_checkpoint,
                                   sd1_checkpoint_path)

pytestmark = pytest.mark.e2e

# What ComfyUI 0.3.75 warns when checkpoint keys are missing or left unused.
COMPLAINTS = ("unet missing", "unet unexpected", "clip missing", "Missing VAE keys", "Leftover VAE keys")


@pytest.fixture(scope="module")
def sd1_checkpoint():
    started = time.monotonic()
    path = sd1_checkpoint_path()
    seconds = time.monotonic() - started
    print(f"\n[sd1 checkpoint] {path.name}: {path.stat().st_size / 1e9:.2f} GB, ready in {seconds:.1f} s")
    return path


def file_layout(path):
    """Key -> shape, read from the safetensors header only."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}


def text_to_image(ckpt_name, seed):
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red fox in the snow"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": seed, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": f"random_sd1_seed{seed}"}},
    }


def run_timed(server, workflow):
    """Run a workflow; returns (history, total seconds, {class_type: seconds}) from the websocket's node events."""
    events = []

    def on_message(message):
        if message["type"] == "executing":
            events.append((time.monotonic(), message["data"].get("node")))

    started = time.monotonic()
    history = server.run(workflow, on_message=on_message)
    total = time.monotonic() - started
    per_node = {workflow[node]["class_type"]: round(t1 - t0, 2)
                for (t0, node), (t1, _) in zip(events, events[1:]) if node is not None}
    return history, total, per_node


def read_png(path):
    image = Image.open(path)
    return image.size, np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def test_a_real_server_loads_the_checkpoint_and_samples_from_it(comfy_server, sd1_checkpoint):
    # Linked after the server started: ComfyUI's filename cache sees the folder's new mtime.
    ckpt_name = install_checkpoint(comfy_server.base)
    log_start = len(comfy_server.log())

    history, cold, cold_nodes = run_timed(comfy_server, text_to_image(ckpt_name, seed=1))
    print(f"\n[sd1 checkpoint] server, cold (load + encode + 3 euler steps + decode): {cold:.1f} s {cold_nodes}")
    history_warm, warm, warm_nodes = run_timed(comfy_server, text_to_image(ckpt_name, seed=2))
    print(f"[sd1 checkpoint] server, model cached, new seed: {warm:.1f} s {warm_nodes}")

    [png] = comfy_server.output_images(history)
    [png_warm] = comfy_server.output_images(history_warm)
    size, pixels = read_png(png)
    assert size == (64, 64)
    assert np.isfinite(pixels).all()
    assert pixels.std() > 0.01 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 16, "image is (nearly) constant"
    assert not np.array_equal(pixels, read_png(png_warm)[1]), "the seed did not change the image"

    log = comfy_server.log()[log_start:]
    for complaint in (*COMPLAINTS, "invalid value encountered"):  # the last: NaN cast to uint8 in SaveImage
        assert complaint not in log, log


def test_comfyui_detects_the_checkpoint_as_sd15_with_every_key_in_place(comfy, sd1_checkpoint, caplog):
    import comfy.model_management
    import comfy.sd

    layout = file_layout(sd1_checkpoint)
    for prefix, count in PARAMETERS.items():  # SD1.5's published sizes: 859.5 M + 123.1 M + 83.7 M
        sizes = [int(np.prod(s)) for k, s in layout.items() if k.startswith(prefix) and "position_ids" not in k]
        assert sum(sizes) == count, prefix

    started = time.monotonic()
    with caplog.at_level(logging.DEBUG):
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(sd1_checkpoint))
    print(f"\n[sd1 checkpoint] in-process load_checkpoint_guess_config: {time.monotonic() - started:.1f} s")
    try:
        assert type(model.model.model_config).__name__ == "SD15"
        # ComfyUI warns about missing or unexpected U-Net / VAE / CLIP keys (SD1.x's absent CLIP projection
        # and its extra position_ids are expected and only logged at debug level).
        complaints = [r.getMessage()[:300] for r in caplog.records if r.levelno >= logging.WARNING
                      and r.getMessage().startswith(COMPLAINTS)]
        assert not complaints

        def part(prefix):
            return {k[len(prefix):]: s for k, s in layout.items() if k.startswith(prefix)}

        unet = {k: tuple(v.shape) for k, v in model.model.diffusion_model.state_dict().items()}
        assert unet == part(UNET_PREFIX)
        autoencoder = {k: tuple(v.shape) for k, v in vae.first_stage_model.state_dict().items()}
        assert autoencoder == part(VAE_PREFIX)
        text = {k: tuple(v.shape) for k, v in clip.cond_stage_model.clip_l.transformer.state_dict().items()}
        ours = part(CLIP_PREFIX)
        ours.pop("text_model.embeddings.position_ids")
        assert {k: text[k] for k in ours if k in text} == ours
        assert set(text) - set(ours) <= {"text_projection.weight", "logit_scale"}  # SD1.x has no projection
    finally:
        del model, clip, vae
        comfy.model_management.unload_all_models()
        gc.collect()
