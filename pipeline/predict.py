"""One look at the noise predictor: noise of level sigma added to a clean latent, the network's guess of it."""
from typing import NamedTuple

import torch

from ..networks.prediction import Cond
from .guidance import to_device
from .noise import Seed, noisy_start, start_noise


class NoisePrediction(NamedTuple):
    """In network units: the clean input x0, the noisy x = x0 + sigma * noise, the predicted clean D(x, sigma) and the
    predicted noise (x - D) / sigma (zero at sigma 0, where there is no noise to predict)."""

    clean: torch.Tensor
    noisy: torch.Tensor
    denoised: torch.Tensor
    noise: torch.Tensor


@torch.no_grad()
def predict_noise(denoiser, latent: torch.Tensor, sigma: float, seed: Seed, cond: Cond | None = None,
                  device: torch.device | str = "cpu") -> NoisePrediction:
    """The denoiser's prediction for a clean latent (family latent units) noised to `sigma` with the seed's noise."""
    clean = denoiser.family.latent.to_network(latent.float())
    x = noisy_start(clean, start_noise(clean.shape, seed), sigma)
    denoised = denoiser(x.to(device), sigma, to_device(cond, device)).float().cpu()
    noise = (x - denoised) / sigma if sigma > 0 else torch.zeros_like(x)
    return NoisePrediction(clean, x, denoised, noise)
