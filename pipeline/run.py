"""Running a sampler end to end: seeded noise added to the latent, the sampler called with the seed, the trajectory."""
from collections.abc import Callable
from typing import NamedTuple

import torch

from ..networks.prediction import Cond
from .finite import check_cfg, explain_non_finite, is_finite
from .guidance import Guided
from .noise import Seed, noisy_start, start_noise


class Trajectory:
    """A sampler callback that keeps every step's noise level, noisy sample x and denoised estimate (on the CPU)."""

    def __init__(self, then: Callable | None = None, keep: bool = True):
        self.then, self.keep = then, keep
        self.steps = []
        self.last_denoised = None

    def __call__(self, info: dict) -> None:
        self.last_denoised = info["denoised"]
        if self.keep:
            self.steps.append({"i": int(info["i"]), "sigma": float(torch.as_tensor(info["sigma"]).reshape(-1)[0]),
                               "x": info["x"].detach().float().cpu(), "denoised": info["denoised"].detach().float().cpu()})
        if self.then is not None:
            self.then(info)


class Sampled(NamedTuple):
    """The sampler's output, the denoised estimate of its last step, and the trajectory (steps kept when recorded)."""

    samples: torch.Tensor
    denoised: torch.Tensor
    trajectory: Trajectory


def evenly_spaced(count: int, shown: int) -> list[int]:
    """`shown` indices out of `count` (0: all), evenly spread, always including the first and the last."""
    if count <= 0:
        return []
    if shown <= 0 or shown >= count:
        return list(range(count))
    if shown == 1:
        return [count - 1]
    return sorted({round(k * (count - 1) / (shown - 1)) for k in range(shown)})


def sample(sampler: Callable, model: Callable, latent: torch.Tensor, sigmas: torch.Tensor, seed: Seed, *,
           callback: Callable | None = None, options: dict | None = None, record: bool = False) -> Sampled:
    """Run `sampler(model, x, sigmas, extra_args={"seed": seed}, callback, disable, **options)` from x = latent +
    sigma_0 * start_noise(seed): the seed also drives a stochastic sampler's noise, item by item."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32).reshape(-1)
    if sigmas.numel() < 2:
        raise ValueError(f"sigmas: sampling needs at least 2 noise levels (where to start and where to stop), "
                         f"got {sigmas.numel()}")
    x = noisy_start(latent, start_noise(latent.shape, seed, latent.device), sigmas[0])
    trajectory = Trajectory(callback, keep=record)
    samples = sampler(model, x, sigmas.to(latent.device), extra_args={"seed": seed}, callback=trajectory, disable=True,
                      **(options or {}))
    denoised = samples if trajectory.last_denoised is None else trajectory.last_denoised
    return Sampled(samples, denoised, trajectory)


def generate(denoiser, sampler: Callable, sigmas: torch.Tensor, latent: torch.Tensor, seed: Seed, *,
             cond: Cond | None = None, uncond: Cond | None = None, cfg: float = 1.0, device: torch.device | str = "cpu",
             options: dict | None = None, callback: Callable | None = None, record: bool = False,
             wrap: Callable | None = None) -> Sampled:
    """Guided sampling with a Denoiser from a latent in its family's latent units to latents in the same units (the
    trajectory stays in network units). `wrap` may dress the guided model for a host's samplers. The denoised estimate
    must be finite at the first step and at the end; when it is not, the error names the likeliest cause."""
    cfg = check_cfg(cfg)
    fmt = denoiser.family.latent
    model = Guided(denoiser, cond, uncond, cfg, device=device)
    x0 = fmt.to_network(latent.float().to(device))
    conds = {"positive": cond, "negative": uncond if cfg != 1.0 else None}

    def explain(where):
        return explain_non_finite(denoiser, where, sigmas=torch.as_tensor(sigmas).reshape(-1), latent=x0, conds=conds,
                                  cfg=cfg)

    def watch(info):
        if info["i"] == 0 and not is_finite(info["denoised"]):
            sigma = float(torch.as_tensor(info["sigma"]).reshape(-1)[0])
            raise ValueError(explain(f"at the first step (sigma {sigma:g})"))
        if callback is not None:
            callback(info)

    out = sample(sampler, wrap(model) if wrap else model, x0, sigmas, seed, callback=watch, options=options,
                 record=record)
    if not is_finite(out.samples, out.denoised):
        raise ValueError(explain("at the end"))
    return Sampled(fmt.from_network(out.samples.float()), fmt.from_network(out.denoised.float()), out.trajectory)
