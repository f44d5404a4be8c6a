"""A model's own noise levels: the sigma <-> timestep maps of discrete VP models and rectified-flow models."""

import torch

from .training import check_betas
from .validation import check_positive

# alpha_bar of the last step when a zero-terminal-SNR schedule makes it exactly 0 (sigma would be infinite):
# 2^-24, as diffusers does, which gives the finite sigma_max = sqrt((1 - 2^-24) / 2^-24) ~ 4096.
ZERO_SNR_ALPHA_CUMPROD = 2.0**-24
FLOW_TABLE_SIZE = 1000  # entries in a flow model's noise table, one per training timestep


class _NoiseTable:
    """A model's noise levels as an ascending table self.sigmas; its ends are the model's sigma range."""

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])


class ModelSchedule(_NoiseTable):
    """A discrete VP model (DDPM, SD): sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), t = 0..T-1 (Karras 2022)."""

    def __init__(self, sigmas: torch.Tensor):
        """The schedule of an ascending sigma table, e.g. one taken from another library's model (see from_betas)."""
        sigmas = torch.as_tensor(sigmas).detach().to(device="cpu", dtype=torch.float32)
        if sigmas.ndim != 1 or sigmas.numel() < 2:
            raise ValueError(
                f"the model's sigmas must be a 1-D table of at least two values, got shape {tuple(sigmas.shape)}"
            )
        if not torch.isfinite(sigmas).all() or (sigmas <= 0).any():
            raise ValueError("the model's sigmas must be finite and positive")
        if (sigmas[1:] <= sigmas[:-1]).any():
            raise ValueError("the model's sigmas must be strictly ascending (timestep 0 least noisy)")
        self.sigmas = sigmas
        self.log_sigmas = sigmas.double().log()

    @classmethod
    def from_betas(cls, betas: torch.Tensor) -> "ModelSchedule":
        """The table implied by training betas; a zero terminal alpha_bar is replaced by ZERO_SNR_ALPHA_CUMPROD."""
        alphas_cumprod = torch.cumprod(1 - check_betas(betas), dim=0)
        if alphas_cumprod[-1] == 0:
            alphas_cumprod[-1] = ZERO_SNR_ALPHA_CUMPROD
        return cls(((1 - alphas_cumprod) / alphas_cumprod).sqrt())

    def sigma(self, timestep: float | torch.Tensor) -> float | torch.Tensor:
        """Noise level at a (fractional) timestep: linear interpolation of log sigma, t clamped to [0, T-1]."""
        t, like = _as_float64(timestep)
        t = t.clamp(0, len(self.sigmas) - 1)
        low = t.floor().long().clamp(max=len(self.sigmas) - 2)
        w = t - low
        log_sigma = (1 - w) * self.log_sigmas[low] + w * self.log_sigmas[low + 1]
        return _like(log_sigma.exp(), like)

    def timestep(self, sigma: float | torch.Tensor) -> float | torch.Tensor:
        """The continuous timestep of a noise level, inverse of sigma(t); sigma is clamped to the table's range."""
        s, like = _as_float64(sigma)
        return _like(table_timestep(self.log_sigmas, s), like)


class FlowSchedule(_NoiseTable):
    """A rectified-flow model (SD3, Flux; Esser et al. 2024): x_sigma = (1 - sigma) x0 + sigma noise, sigma in (0, 1].

    sigma(t) = shift u / (1 + (shift - 1) u) with u = t / multiplier: the resolution-dependent timestep shift.
    timestep(sigma) = sigma * multiplier is the network's time input, which is the shifted noise level itself,
    so timestep and sigma are inverses only when shift == 1 (ComfyUI's ModelSamplingDiscreteFlow agrees).
    """

    def __init__(self, shift: float = 3.0, multiplier: float = 1000):
        self.shift = check_positive(shift, "shift")
        self.multiplier = check_positive(multiplier, "multiplier")
        times = torch.arange(1, FLOW_TABLE_SIZE + 1, dtype=torch.float64) / FLOW_TABLE_SIZE * self.multiplier
        self.sigmas = self.sigma(times).float()

    def sigma(self, timestep: float | torch.Tensor) -> float | torch.Tensor:
        """Shifted noise level at training time t (u = t / multiplier clamped to [0, 1])."""
        t, like = _as_float64(timestep)
        u = (t / self.multiplier).clamp(0, 1)
        return _like(self.shift * u / (1 + (self.shift - 1) * u), like)

    def timestep(self, sigma: float | torch.Tensor) -> float | torch.Tensor:
        """The network's time input for a noise level: sigma * multiplier."""
        s, like = _as_float64(sigma)
        return _like(s * self.multiplier, like)


def table_timestep(log_sigmas: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The continuous timestep of noise levels in an ascending table of log sigmas: linear interpolation in log sigma,
    sigma clamped to the table's range (on the tensors' device, in their dtype)."""
    log_sigma = sigma.log().clamp(log_sigmas[0], log_sigmas[-1])
    high = torch.searchsorted(log_sigmas, log_sigma).clamp(1, log_sigmas.numel() - 1)
    low = high - 1
    return low + (log_sigma - log_sigmas[low]) / (log_sigmas[high] - log_sigmas[low])


def _as_float64(value):
    """A float64 CPU tensor of `value`, and the tensor (or None) whose dtype and device the result takes."""
    like = value if isinstance(value, torch.Tensor) else None
    return torch.as_tensor(value).detach().to(device="cpu", dtype=torch.float64), like


def _like(result, like):
    """`result` on `like`'s device in `like`'s floating dtype; float32 for python numbers and integer tensors."""
    if like is None:
        return result.float()
    dtype = like.dtype if like.is_floating_point() else torch.float32
    return result.to(device=like.device, dtype=dtype)
