"""How a model's noisy sample is made, which the samplers need wherever they add fresh noise.

A model sees x = alpha(sigma) x0 + sigma eps. Variance exploding ("ve"; Karras et al. 2022, EDM): alpha = 1, sigma in
[0, inf); a variance-preserving model wrapped k-diffusion style (SD1.x, SDXL) is the same. Rectified flow ("flow";
Liu et al. 2022; Esser et al. 2024, SD3; also FLUX, AuraFlow, Wan): alpha = 1 - sigma, sigma in [0, 1].

For both, alpha - sigma dalpha/dsigma = 1, so the probability-flow ODE is dx/dsigma = (x - D(x, sigma)) / sigma in
either case, and a sampler that only integrates it (Euler, Heun, linear multistep, DPM-Solver++(2M), UniPC, ...) is
right for both as it stands; so is the exponential-Euler step x_t = (sigma_t / sigma_s) x_s + (1 - sigma_t / sigma_s) D.
What differs is noise: a step that adds fresh noise must land on the model's own path x = alpha x0 + sigma eps.
In the noise-to-signal variables x / alpha and sigma / alpha every model is a VE one; the exponential integrators'
time is the half log-SNR lambda = log(alpha / sigma), and their steps carry alpha at the step's end on D.
"""
import math
from dataclasses import dataclass

import torch

from .common import ancestral_step
from .exponential import lambda_of

# ComfyUI's choice for dpmpp_2s_ancestral on a flow model: from sigma = 1 (lambda = -inf) the stage in the middle
# of the step, in lambda, is undefined; the stage is taken at this sigma instead.
FLOW_FIRST_STAGE = 0.9999


@dataclass(frozen=True)
class NoiseModel:
    """x = alpha(sigma) x0 + sigma eps: "ve" (alpha = 1) or "flow" (rectified flow, alpha = 1 - sigma).

    sigma_top (flow only): sigma = 1 is pure noise, where lambda = -inf; the samplers that need lambda at the
    first sigma start at sigma_top instead (ComfyUI: the model's sigma at 0.01 % of the way, 0.9999 for shift 1)."""

    name: str = "ve"
    sigma_top: float = 0.9999

    def __post_init__(self):
        if self.name not in ("ve", "flow"):
            raise ValueError(f"noise_model: expected 've' (variance exploding) or 'flow' (rectified flow), "
                             f"got {self.name!r}")
        if not 0 < self.sigma_top < 1:
            raise ValueError(f"noise_model: sigma_top must lie strictly between 0 and 1, got {self.sigma_top!r}")

    @property
    def flow(self):
        return self.name == "flow"

    def alpha(self, sigma):
        """The signal scale alpha(sigma): 1, or 1 - sigma for rectified flow."""
        return 1 - sigma if self.flow else 1.0

    def lambda_of(self, sigma):
        """The half log-SNR log(alpha / sigma) (Lu et al. 2022): -log(sigma), or log((1 - sigma) / sigma)."""
        if not self.flow:
            return lambda_of(sigma)
        if isinstance(sigma, torch.Tensor):
            return torch.log((1 - sigma) / sigma)
        return math.log((1 - sigma) / sigma)

    def sigma_of(self, lam):
        """sigma at half log-SNR lam, the inverse of lambda_of: e^(-lam), or 1 / (1 + e^lam)."""
        if isinstance(lam, torch.Tensor):
            return lam.neg().sigmoid() if self.flow else lam.neg().exp()
        if self.flow:
            return 1 / (1 + math.exp(lam)) if lam < 0 else math.exp(-lam) / (1 + math.exp(-lam))
        return math.exp(-lam)

    def ratio(self, sigma):
        """The noise-to-signal ratio sigma / alpha: the VE noise level of the same sample scaled by 1 / alpha."""
        return sigma / self.alpha(sigma) if self.flow else sigma

    def from_ratio(self, ratio):
        """sigma whose noise-to-signal ratio is `ratio` (the inverse of ratio): ratio, or ratio / (1 + ratio)."""
        return ratio / (1 + ratio) if self.flow else ratio

    def log_snr_start(self, sigmas):
        """The sigmas with a first sigma >= 1 on a flow model replaced by sigma_top (a copy; others unchanged)."""
        if not self.flow or len(sigmas) < 2 or float(sigmas[0]) < 1:
            return sigmas
        sigmas = torch.as_tensor(sigmas).clone()
        sigmas[0] = self.sigma_top
        return sigmas

    def ancestral_step(self, sigma, sigma_next, eta=1.0):
        """Split a step into a deterministic one to sigma_down and fresh noise: returns (sigma_down, sigma_up, scale),
        and x_next = scale * x_down + sigma_up * z lies on the path at sigma_next.

        VE (Song et al. 2021): sigma_up = min(sigma_next, eta sigma_next sqrt(1 - sigma_next^2 / sigma^2)),
        sigma_down = sqrt(sigma_next^2 - sigma_up^2), scale 1. Rectified flow (ComfyUI's *_RF samplers): the step
        goes down to sigma_down = sigma_next (1 - eta (1 - sigma_next / sigma)), at least 0 (for eta = 1 it shrinks
        sigma by the step's own ratio once more); x_down = alpha_down x0 + sigma_down eps is scaled by
        alpha_next / alpha_down, which restores the signal, and noise of variance sigma_next^2 - (scale sigma_down)^2
        restores the noise (real, since sigma_down / alpha_down <= sigma_next / alpha_next)."""
        if not self.flow:
            return (*ancestral_step(sigma, sigma_next, eta), 1.0)
        sigma_down = sigma_next * max(0.0, 1 + (float(sigma_next) / float(sigma) - 1) * eta)
        scale = (1 - sigma_next) / (1 - sigma_down)
        sigma_up = max(0.0, float(sigma_next) ** 2 - float(scale * sigma_down) ** 2) ** 0.5
        return sigma_down, sigma_up, scale

    def raise_noise(self, x, sigma, sigma_to, noise):
        """x on the path at sigma, moved to the higher noise level sigma_to with fresh `noise` (forward process):
        (alpha_to / alpha) x + sqrt(sigma_to^2 - (alpha_to sigma / alpha)^2) z."""
        if not self.flow:
            return x + noise * (sigma_to**2 - sigma**2) ** 0.5
        scale = (1 - sigma_to) / (1 - sigma)
        return scale * x + noise * max(0.0, float(sigma_to) ** 2 - float(scale * sigma) ** 2) ** 0.5


VE = NoiseModel("ve")
FLOW = NoiseModel("flow")


def noise_model_of(value):
    """A NoiseModel from one, or from its name "ve" or "flow"."""
    if isinstance(value, NoiseModel):
        return value
    if value in ("ve", "flow"):
        return VE if value == "ve" else FLOW
    raise ValueError(f"noise_model: expected 've' (variance exploding) or 'flow' (rectified flow), got {value!r}")


def refuse_flow(sampler, what, instead="choose another sampler"):
    """The clear error for a sampler (or an option of it) that cannot run on a rectified-flow model."""
    raise ValueError(f"{sampler}: {what} does not support rectified-flow models (SD3, FLUX, AuraFlow, Wan); {instead}")
