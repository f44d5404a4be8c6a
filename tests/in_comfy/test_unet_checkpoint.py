"""The full-size random-weight SD1.x checkpoint: our U-Net swapped in for ComfyUI's gives the same latents, and
loading it streams the weights (RAM peak near their size)."""
import json
import subprocess
import sys
import time

import pytest
import torch

from diffusion_blocks.devtools.sd_checkpoint import UNET_PREFIX, sd1_checkpoint_path


@pytest.fixture(scope="module")
def checkpoint():
    return sd1_checkpoint_path()


def test_our_unet_swapped_into_a_comfyui_sampling_run_gives_the_same_latents(comfy, checkpoint):
    """Same file, same sampler, same noise and conditioning: ComfyUI's own model vs our Denoiser around our U-Net."""
    import comfy.sample
    import comfy.samplers
    import comfy.sd
    import comfy.utils

    from diffusion_blocks.networks.prediction import Denoiser
    from diffusion_blocks.networks.unet_loading import load_unet
    from diffusion_blocks.samplers import SAMPLERS
    from diffusion_blocks.schedules import get_sigmas

    started = time.monotonic()
    weights = comfy.utils.load_torch_file(str(checkpoint))
    native = comfy.sd.load_diffusion_model_state_dict(comfy.utils.state_dict_prefix_replace(weights, {UNET_PREFIX: ""}, filter_keys=True))
    del weights
    ours = Denoiser(load_unet(checkpoint), quantize=True)  # ComfyUI rounds timesteps to training steps
    loaded = time.monotonic()

    g = torch.Generator().manual_seed(7)
    noise = torch.randn(1, 4, 8, 8, generator=g)  # 64x64 pixels
    positive, negative = torch.randn(1, 77, 768, generator=g), torch.randn(1, 77, 768, generator=g)
    sigmas = get_sigmas("karras", 2, sigma_min=0.5, sigma_max=10.0)  # below sigma_max: ComfyUI scales noise by sigma
    sampler = comfy.samplers.KSAMPLER(SAMPLERS["euler"])
    with torch.no_grad():
        theirs = comfy.sample.sample_custom(native, noise, 5.0, sampler, sigmas, [[positive, {}]], [[negative, {}]],
                                            torch.zeros_like(noise), disable_pbar=True, seed=7)
        mine = SAMPLERS["euler"](ours, noise * sigmas[0], sigmas, disable=True,
                                 extra_args={"cond": positive, "uncond": negative, "cfg": 5.0})
    print(f"\n[unet swap] load {loaded - started:.1f} s, two sampling runs {time.monotonic() - loaded:.1f} s")
    mine = mine / ours.spec.latent_scale  # ComfyUI hands back latents in the VAE's units
    assert ((mine - theirs).abs().max() / theirs.abs().max()).item() < 1e-4


def test_loading_in_fp16_peaks_near_the_weights_size(checkpoint):
    """Meta-device build + one tensor at a time read straight into its final buffer: RAM grows by the weights only."""
    code = f"""
import json, resource
import torch
from diffusion_blocks.networks.unet_loading import load_unet
def rss(field):
    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith(field))
before = rss('VmRSS:')
unet = load_unet({str(checkpoint)!r}, dtype='fp16')
weights = sum(p.numel() * p.element_size() for p in unet.parameters())
print(json.dumps({{'before': before, 'peak': rss('VmHWM:'), 'weights': weights, 'family': unet.family}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    growth = figures["peak"] - figures["before"]
    print(f"\n[unet load] fp16 weights {figures['weights'] / 1e9:.2f} GB, RAM growth at peak {growth / 1e9:.2f} GB")
    assert figures["family"] == "sd1"
    assert growth <= 1.2 * figures["weights"]
