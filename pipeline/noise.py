"""Seeded start noise, one CPU generator per batch item, and the forward process x = x0 + sigma * noise."""
from collections.abc import Sequence

import torch

from ..samplers.common import NoiseStream

Seed = int | Sequence[int] | torch.Tensor


def start_noise(shape: Sequence[int], seed: Seed, device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard normal noise, item k from a CPU generator seeded with its item seed (the first draw of the run's
    NoiseStream), then moved: one seed, one image on any device and at any batch size (for one item this is ComfyUI's
    prepare_noise)."""
    return NoiseStream(shape, seed).draw().to(device)


def noisy_start(latent: torch.Tensor, noise: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """The forward process in variance-exploding form (Karras et al. 2022): x = latent + sigma * noise.

    With an empty (zero) latent this is pure noise of level sigma; with an encoded image it is image-to-image,
    the first sigma of the schedule deciding how much of the image is kept."""
    return latent + float(sigma) * noise
