"""Text to image with the pack's own blocks, outside ComfyUI: prompts -> guided samples -> uint8 pixels.

Each image's start noise comes from a CPU generator seeded with its own seed (as ComfyUI's noise is), so a
batch gives the same pictures as generating them one by one, on any device.
"""
import torch

from ..networks.prediction import Denoiser
from ..samplers import SAMPLERS
from ..schedules import get_sigmas
from .render import to_uint8

SIZE = 64


def start_noise(seeds, channels=3, size=SIZE):
    """(B, C, size, size) standard normal noise, image i from a CPU generator seeded with seeds[i]."""
    return torch.cat([torch.randn((1, channels, size, size), generator=torch.Generator().manual_seed(int(seed)))
                      for seed in seeds])


@torch.no_grad()
def text_to_image(unet, encoder, prompts, seeds, steps=20, sampler="dpmpp_2m", scheduler="karras", cfg=5.0,
                  negative="", device="cpu"):
    """(B, H, W, 3) uint8 images of the prompts, one seed each."""
    denoiser = Denoiser(unet).to(device)
    cond = torch.cat([encoder.encode(p)[0] for p in prompts]).to(device)
    uncond = encoder.encode(negative)[0].to(device)
    sigmas = get_sigmas(scheduler, steps, model=denoiser.schedule).to(device)
    x = start_noise(seeds, unet.config.in_channels).to(device) * sigmas[0]

    def model(x, sigma, **extra):
        return denoiser(x, sigma, cond=cond, uncond=uncond, cfg=cfg)

    samples = SAMPLERS[sampler](model, x, sigmas, extra_args={}, disable=True)
    return to_uint8(samples.float().cpu())
