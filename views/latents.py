"""Latents drawn as pictures (H, W, 3) in [0, 1]: through a decoder, a linear RGB map, or the channels themselves."""
from collections.abc import Callable, Sequence

import numpy as np
import torch


def channels_picture(t: torch.Tensor) -> np.ndarray:
    """The first item's first three channels as RGB (each stretched to its range); pixel-space ones as they are."""
    t = t[0].float()
    if t.shape[0] == 3:
        return ((t + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()
    rgb = t[:3] if t.shape[0] >= 3 else t[:1].expand(3, -1, -1)
    low, high = rgb.amin(dim=(1, 2), keepdim=True), rgb.amax(dim=(1, 2), keepdim=True)
    return ((rgb - low) / (high - low).clamp_min(1e-6)).permute(1, 2, 0).numpy()


def noise_picture(noise: torch.Tensor) -> np.ndarray:
    """Standard-normal noise of the first item as colours: 0 is grey, +-3 standard deviations are the extremes."""
    rgb = noise[0, :3] if noise.shape[1] >= 3 else noise[0, :1].expand(3, -1, -1)
    return (0.5 + rgb / 6).clamp(0, 1).permute(1, 2, 0).numpy()


def latent_picture(decode: Callable | None = None, rgb_factors: Sequence | None = None,
                   rgb_bias: Sequence | None = None) -> Callable[[torch.Tensor], np.ndarray]:
    """Network-space latent (B, C, H, W) -> picture of its first item: `decode` (network units -> image (B, H, W, 3)
    in [0, 1]), else the linear RGB approximation (rgb = x W + b, in [-1, 1]), else the channels as colours."""
    def picture(t):
        t = t[:1].float().cpu()
        if decode is not None:
            return decode(t)[0].float().cpu().clamp(0, 1).numpy()
        if rgb_factors is None:
            return channels_picture(t)
        rgb = t[0].movedim(0, -1) @ torch.tensor(rgb_factors) + torch.tensor(rgb_bias or [0.0, 0.0, 0.0])
        return ((rgb + 1) / 2).clamp(0, 1).numpy()
    return picture


def noisy_picture(picture: Callable, unit_variance: bool) -> Callable[[torch.Tensor, float], np.ndarray]:
    """A noisy sample x at level sigma drawn as it is, or scaled to unit variance x / sqrt(1 + sigma^2) (what the
    network is fed)."""
    def show(x, sigma):
        return picture(x / (sigma**2 + 1) ** 0.5 if unit_variance else x)
    return show
