"""One look at the noise predictor: noise of level sigma added to a clean latent, the network's guess of it."""
from typing import NamedTuple

import torch

from ..networks.prediction import Cond
from .finite import check_sigma, explain_non_finite, is_finite
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
    """The denoiser's prediction for a clean latent (family latent units) noised to `sigma` with the seed's noise; a
    prediction that is not finite is an error naming its likeliest cause."""
    sigma = check_sigma(sigma)
    clean = denoiser.family.latent.to_network(latent.float())
    x = noisy_start(clean, start_noise(clean.shape, seed), sigma)
    denoised = denoiser(x.to(device), sigma, to_device(cond, device)).float().cpu()
    if not is_finite(denoised):
        raise ValueError(explain_non_finite(denoiser, f"at sigma {sigma:g}", latent=clean, conds={"positive": cond}))
    noise = (x - denoised) / sigma if sigma > 0 else torch.zeros_like(x)
    return NoisePrediction(clean, x, denoised, noise)
