"""Text to image with the pack's own blocks, outside ComfyUI: prompts -> guided samples -> uint8 pixels.

Image i starts from the noise of its own seed (samplers.run.start_noise, as the Sample node draws it for a
batch of one), so a batch gives the same pictures as generating them one by one, on any device.
"""
import torch

from ..networks.prediction import Denoiser
from ..samplers import SAMPLERS
from ..samplers.run import Guided, start_noise
from ..schedules import get_sigmas
from .render import to_uint8

SIZE = 64


@torch.no_grad()
def text_to_image(unet, encoder, prompts, seeds, steps=20, sampler="dpmpp_2m", scheduler="karras", cfg=5.0,
                  negative="", device="cpu"):
    """(B, H, W, 3) uint8 images of the prompts, one seed each."""
    denoiser = Denoiser(unet).to(device)
    cond = torch.cat([encoder.encode(p)[0] for p in prompts]).to(device)
    uncond = encoder.encode(negative)[0].to(device)
    sigmas = get_sigmas(scheduler, steps, model=denoiser.schedule).to(device)
    shape = (1, unet.config.in_channels, SIZE, SIZE)
    x = torch.cat([start_noise(shape, seed) for seed in seeds]).to(device) * sigmas[0]
    samples = SAMPLERS[sampler](Guided(denoiser, cond, uncond, cfg), x, sigmas, extra_args={}, disable=True)
    return to_uint8(samples.float().cpu())
