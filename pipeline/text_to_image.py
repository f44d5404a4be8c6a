"""Text to image with the pack's own blocks, outside ComfyUI: prompts -> guided samples -> uint8 pixels.

The same pipeline as the Sample node: image i is the single image of seed i, whatever the batch, on any device.
"""
from collections.abc import Sequence

import torch

from ..networks.prediction import Cond, Denoiser
from ..samplers import SAMPLERS
from ..schedules import get_sigmas
from ..views.pixels import to_uint8
from .run import generate


@torch.no_grad()
def text_to_image(unet, encoder, prompts: Sequence[str], seeds: Sequence[int], steps: int = 20,
                  sampler: str = "dpmpp_2m", scheduler: str = "karras", cfg: float = 5.0, negative: str = "",
                  size: int = 64, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, H, W, 3) uint8 pictures of a pixel-space model, one prompt and one seed per picture."""
    if len(prompts) != len(seeds):
        raise ValueError(f"seeds: {len(seeds)} seeds for {len(prompts)} prompts; give one seed per prompt")
    denoiser = Denoiser(unet).to(device)
    cond = Cond(torch.cat([encoder.encode(p)[0] for p in prompts]))
    uncond = Cond(encoder.encode(negative)[0])
    sigmas = get_sigmas(scheduler, steps, model=denoiser.schedule)
    latent = torch.zeros(len(prompts), unet.config.latent_channels, size, size)
    out = generate(denoiser, SAMPLERS[sampler], sigmas, latent, list(seeds), cond=cond, uncond=uncond, cfg=cfg,
                   device=device)
    return to_uint8(out.samples.cpu())
