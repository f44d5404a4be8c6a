"""A noise predictor as a denoiser: eps / v / x0 networks -> D(x, sigma), classifier-free guidance and its rescaling.

A discrete VP model (DDPM, Stable Diffusion) sees x_t = alpha_t x0 + s_t eps with alpha_t^2 + s_t^2 = 1.
In the variance-exploding form every sampler uses, x = x_t / alpha_t = x0 + sigma eps with
sigma = s_t / alpha_t, and the network is wrapped as D(x, sigma) = c_skip x + c_out F(c_in x, t(sigma))
(Karras et al. 2022, eq. 7 and tab. 1, with sigma_data = 1).
"""
import math
from dataclasses import dataclass

import torch
from torch import nn

from .families import family_for
from .training_spec import PREDICTIONS, TrainingSpec


def preconditioning(sigma, prediction):
    """(c_skip, c_out, c_in) for an eps, v (Salimans & Ho 2022) or x0 network of a VP model, sigma_data = 1."""
    c_in = 1 / (sigma**2 + 1).sqrt()
    if prediction == "eps":  # x0 = x - sigma eps
        return torch.ones_like(sigma), -sigma, c_in
    if prediction == "v":  # v = alpha eps - s x0  =>  x0 = alpha^2 x - sigma alpha v, alpha = c_in
        return c_in**2, -sigma * c_in, c_in
    if prediction == "x0":
        return torch.zeros_like(sigma), torch.ones_like(sigma), c_in
    raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}")


@dataclass
class Cond:
    """One conditioning of the network: the text embedding (B, T, D) and, for SDXL, the vector y (B, adm)."""

    context: torch.Tensor = None
    y: torch.Tensor = None


class Denoiser(nn.Module):
    """D(x, sigma, cond, uncond, cfg): the clean-sample estimate of a network, with classifier-free guidance
    (Ho & Salimans 2022) in one batched call and optional guidance rescaling (Lin et al. 2024, sec. 3.4).

    The network's time input is the continuous timestep of sigma; `quantize` rounds it to the nearest training
    step, as the network saw in training and as ComfyUI's discrete models do.
    """

    def __init__(self, network, spec=None, quantize=False):
        super().__init__()
        self.network = network
        self.spec = spec or getattr(network, "trained_as", None) or TrainingSpec()
        self.schedule = self.spec.schedule()
        self.quantize = quantize

    @property
    def prediction(self):
        return self.spec.prediction

    @property
    def family(self):
        """The network's ModelFamily (networks.families): its latents, text conditioning and vector recipe."""
        return family_for(self.network.config, self.spec)

    def forward(self, x, sigma, cond=None, uncond=None, cfg=1.0, cfg_rescale=0.0):
        """Denoised x at noise level sigma (scalar or (B,)); guided by cond vs uncond when both are given."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
        cond = as_cond(cond)
        if uncond is None or cfg == 1.0:
            return self.evaluate(x, sigma, cond)
        uncond = as_cond(uncond)
        both = Cond(*(joined(a, b, x.shape[0]) for a, b in ((cond.context, uncond.context), (cond.y, uncond.y))))
        d_cond, d_uncond = self.evaluate(torch.cat([x, x]), torch.cat([sigma, sigma]), both).chunk(2)
        denoised = d_uncond + cfg * (d_cond - d_uncond)
        if cfg_rescale:
            denoised = rescale_guidance(x, sigma, denoised, d_cond, cfg_rescale)
        return denoised

    def evaluate(self, x, sigma, cond):
        """One network call: D(x, sigma) = c_skip x + c_out F(c_in x, t(sigma)); sigma is (B,)."""
        t = self.schedule.timestep(sigma.float())
        t = t.round() if self.quantize else t
        context, y = (batched(v, x.shape[0]) for v in (cond.context, cond.y))
        return preconditioned(lambda h: self.network(h, t, context, y), x, sigma, self.prediction)


def preconditioned(network, x, sigma, prediction):
    """D(x, sigma) = c_skip x + c_out F(c_in x) (Karras et al. 2022, eq. 7): the clean estimate from one call of
    `network` (F at the noise level's timestep) on the scaled input; sigma is (B,)."""
    c_skip, c_out, c_in = (c.to(x.dtype)[:, None, None, None] for c in preconditioning(sigma.double(), prediction))
    return c_skip * x + c_out * network(c_in * x).to(x.dtype)


def rescale_guidance(x, sigma, guided, positive, phi):
    """Lin et al. 2024, eq. 15-17: scale the guided v-prediction to the conditional one's standard deviation and
    blend by phi; done in v space whatever the network predicts (v is affine in the denoised estimate)."""
    s = sigma.to(x.dtype)[:, None, None, None]
    safe = torch.where(s > 0, s, torch.ones_like(s))

    def to_v(denoised):
        return (x / (s**2 + 1) - denoised) * (s**2 + 1).sqrt() / safe

    v_cfg, v_pos = to_v(guided), to_v(positive)
    dims = tuple(range(1, x.ndim))
    v_rescaled = v_cfg * v_pos.std(dim=dims, keepdim=True) / v_cfg.std(dim=dims, keepdim=True)
    v_final = phi * v_rescaled + (1 - phi) * v_cfg
    rescaled = x / (s**2 + 1) - v_final * s / (s**2 + 1).sqrt()
    return torch.where(s > 0, rescaled, guided)


def as_cond(cond):
    """A Cond from a Cond, a bare text embedding, or None."""
    if cond is None or isinstance(cond, Cond):
        return cond or Cond()
    if isinstance(cond, torch.Tensor):
        return Cond(cond)
    if isinstance(cond, dict):
        return Cond(cond.get("context"), cond.get("y"))
    raise TypeError(f"a conditioning must be a Cond, a text-embedding tensor or a dict, got {type(cond).__name__}")


def batched(value, batch):
    """A conditioning tensor repeated to the batch (a batch of 1 is shared by every sample)."""
    if value is None or value.shape[0] == batch:
        return value
    if batch % value.shape[0]:
        raise ValueError(f"a conditioning of batch {value.shape[0]} cannot be shared by a batch of {batch}")
    return value.repeat_interleave(batch // value.shape[0], dim=0)


def joined(a, b, batch):
    """Positive and negative conditioning stacked for one call; text of different lengths is tiled to a common
    length (attention over a sequence repeated k times equals attention over the sequence)."""
    if a is None or b is None:
        if a is not None or b is not None:
            raise ValueError("cond and uncond must carry the same parts (both a text embedding, both a vector y)")
        return None
    a, b = batched(a, batch), batched(b, batch)
    if a.ndim == 3 and a.shape[1] != b.shape[1]:
        length = math.lcm(a.shape[1], b.shape[1])
        a, b = a.repeat(1, length // a.shape[1], 1), b.repeat(1, length // b.shape[1], 1)
    return torch.cat([a, b])
