"""Classifier-free guidance (Ho & Salimans 2022) bound to a denoiser: the sampler convention model(x, sigma)."""
import torch

from ..networks.prediction import Cond
from .fast_step import FastGuided, runs_fast


def to_device(cond: Cond | None, device: torch.device | str) -> Cond | None:
    """The conditioning's tensors on the compute device."""
    if cond is None:
        return None
    return Cond(*(None if t is None else t.to(device) for t in (cond.context, cond.y)))


class Guided:
    """A Denoiser with its conditioning fixed, in the sampler convention model(x, sigma, **extra_args): cond and
    uncond go through the network in one batched call. With a FastUNet (networks.unet.fast) the whole step goes
    through pipeline.fast_step, which makes what stays the same during the run once."""

    def __init__(self, denoiser, cond: Cond | None = None, uncond: Cond | None = None, cfg: float = 1.0,
                 device: torch.device | str | None = None):
        self.denoiser, self.cfg = denoiser, float(cfg)
        self.cond, self.uncond = (c if device is None else to_device(c, device) for c in (cond, uncond))
        self.fast = FastGuided(denoiser, self.cond, self.uncond, self.cfg) if runs_fast(denoiser) else None

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args) -> torch.Tensor:
        with torch.no_grad():
            if self.fast is not None:
                return self.fast(x, sigma)
            return self.denoiser(x, sigma, self.cond, self.uncond, self.cfg)
