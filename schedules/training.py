"""Training noise schedules: the betas a discrete diffusion model was trained with, and their zero-SNR rescaling."""

import math

import torch

from .validation import check_choice, check_number, check_steps

BETA_SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid")
COSINE_OFFSET = 0.008  # s in Nichol & Dhariwal 2021, eq. 17: keeps beta_1 from being vanishingly small
COSINE_MAX_BETA = 0.999  # their clipping, which keeps the last steps from being singular


def training_betas(name: str, timesteps: int = 1000, beta_start: float = 0.00085,
                   beta_end: float = 0.012) -> torch.Tensor:
    """The betas of a named training schedule as a float64 1-D tensor (beta_start/beta_end unused by cosine)."""
    check_choice(name, BETA_SCHEDULES, "beta schedule")
    timesteps = check_steps(timesteps, "timesteps")
    beta_start = _check_beta(beta_start, "beta_start")
    beta_end = _check_beta(beta_end, "beta_end")
    if name == "linear":  # Ho et al. 2020 (DDPM)
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    if name == "scaled_linear":  # Rombach et al. 2022 (latent diffusion): linear in sqrt(beta)
        return torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float64) ** 2
    if name == "sigmoid":  # Xu et al. 2022 (GeoDiff): a sigmoid over [-6, 6] stretched to [beta_start, beta_end]
        ramp = torch.sigmoid(torch.linspace(-6, 6, timesteps, dtype=torch.float64))
        return beta_start + (beta_end - beta_start) * ramp
    return cosine_betas(timesteps)


def cosine_betas(timesteps):
    """Nichol & Dhariwal 2021, eq. 17: alpha_bar(t) = f(t)/f(0), f(t) = cos^2(pi/2 (t/T + s)/(1 + s)), betas clipped."""
    t = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((t + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    return (1 - alphas_cumprod[1:] / alphas_cumprod[:-1]).clamp(max=COSINE_MAX_BETA)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2024, Algorithm 1: shift and scale sqrt(alpha_bar) so the last step is pure noise, the first kept."""
    betas = check_betas(betas)
    sqrt_alphas_cumprod = torch.cumprod(1 - betas, dim=0).sqrt()
    first, last = sqrt_alphas_cumprod[0].item(), sqrt_alphas_cumprod[-1].item()
    if first == last:
        raise ValueError("betas must add some noise (they are all zero)")
    sqrt_alphas_cumprod = (sqrt_alphas_cumprod - last) * first / (first - last)
    alphas_cumprod = sqrt_alphas_cumprod**2
    alphas = torch.cat([alphas_cumprod[:1], alphas_cumprod[1:] / alphas_cumprod[:-1]])
    return 1 - alphas


def check_betas(betas, name="betas"):
    """A float64 1-D tensor of at least two betas in [0, 1), except a last beta of 1 (zero terminal SNR)."""
    try:
        betas = torch.as_tensor(betas).detach().to(device="cpu", dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{name} must be a 1-D list of numbers: {error}") from None
    if betas.ndim != 1 or betas.numel() < 2:
        raise ValueError(f"{name} must be a 1-D tensor of at least two values, got shape {tuple(betas.shape)}")
    if not torch.isfinite(betas).all() or (betas < 0).any() or (betas[:-1] >= 1).any() or betas[-1] > 1:
        raise ValueError(f"{name} must lie in [0, 1) (only the last may be 1)")
    return betas


def _check_beta(value, name):
    """A beta strictly between 0 and 1."""
    value = check_number(value, name)
    if not 0 < value < 1:
        raise ValueError(f"{name} must be between 0 and 1 (exclusive), got {value}")
    return value
