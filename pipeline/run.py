"""Running a sampler end to end: seeded noise added to the latent, the sampler called with the seed, the trajectory."""
import dataclasses
import inspect
from collections.abc import Callable
from typing import NamedTuple

import torch

from ..networks.prediction import Cond
from ..samplers.common import NoiseStream
from .digest import fingerprint
from .finite import check_cfg, explain_non_finite, is_finite
from .guidance import Guided
from .noise import Seed, noisy_start
from .part_way import PartWay, Replay, sampler_key


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
    """The sampler's output, the denoised estimate of its last step, the trajectory (steps kept when recorded), and,
    for a run that stopped above sigma 0, what a second run needs to go on (a PartWay still without the fingerprint of
    the samples as the host stores them)."""

    samples: torch.Tensor
    denoised: torch.Tensor
    trajectory: Trajectory
    so_far: PartWay | None = None

    def part_way(self, stored: torch.Tensor) -> PartWay | None:
        """What a latent holding `stored` (these samples as the host keeps them) carries so that a second run over
        the rest of the schedule goes on with this one; None when the run went down to sigma 0."""
        return None if self.so_far is None else dataclasses.replace(self.so_far, fingerprint=fingerprint(stored))


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
           callback: Callable | None = None, options: dict | None = None, record: bool = False,
           resume: PartWay | None = None, wrap: Callable | None = None, extra_args: dict | None = None,
           scaling: Callable = noisy_start) -> Sampled:
    """Run `sampler(model, x, sigmas, extra_args={"seed": seed}, callback, disable, **options)` from x = latent +
    sigma_0 * noise, the noise the first draw of the run's NoiseStream, whose later draws are a stochastic sampler's
    step noise, item by item. `wrap` may dress the model for a host's samplers; `extra_args` adds a host's arguments
    for the model, and `scaling(latent, noise, sigma)` replaces the forward process (a flow model's, say).

    With `resume` (a run that stopped part-way at sigmas[0]) the seed is that run's and no noise is added. Under the
    same sampler and options, the sampler runs over that run's schedule followed by this one, its first steps answered
    from the run's model calls (replayed, not shown: the steps shown are numbered from the first new one): the result
    is the one run over the whole schedule, multistep samplers included. Under another sampler, it starts from
    `latent` with the noise stream where that run left it."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32).reshape(-1)
    if sigmas.numel() < 2:
        raise ValueError(f"sigmas: sampling needs at least 2 noise levels (where to start and where to stop), "
                         f"got {sigmas.numel()}")
    options, key = dict(options or {}), sampler_key(sampler, options or {})
    replay = resume is not None and resume.sampler == key
    if resume is None:
        noise = NoiseStream(latent.shape, seed, latent.device, latent.dtype)
        x = scaling(latent, noise(), sigmas[0])
    else:
        seed = list(resume.seeds)
        noise = NoiseStream.resumed(latent.shape, seed, resume.start_draws if replay else resume.draws, latent.device,
                                    latent.dtype)
        x = resume.start.to(latent) if replay else scaling(latent, torch.zeros_like(latent), sigmas[0])
    if replay:
        sigmas = torch.cat([torch.tensor(resume.sigmas[:-1], dtype=torch.float32), sigmas])
    start_draws = noise.draws
    if takes_noise_sampler(sampler):
        options.setdefault("noise_sampler", noise)
    part_way = sigmas[-1] > 0
    logged = Replay(model, resume.calls if replay else ()) if part_way or replay else model
    trajectory = Trajectory(callback, keep=record)
    samples = sampler(wrap(logged) if wrap else logged, x, sigmas.to(latent.device),
                      extra_args={**(extra_args or {}), "seed": seed},
                      callback=new_steps_only(trajectory, logged, len(resume.sigmas) - 1) if replay else trajectory,
                      disable=True, **options)
    denoised = samples if trajectory.last_denoised is None else trajectory.last_denoised
    so_far = (PartWay(key, tuple(sigmas.tolist()), tuple(noise.seeds), x.detach().cpu(), start_draws,
                      tuple(logged.log), noise.draws, fingerprint="") if part_way else None)
    return Sampled(samples, denoised, trajectory, so_far)


def new_steps_only(trajectory: Trajectory, replay: Replay, replayed_steps: int) -> Callable:
    """A callback passing on the steps after the replayed ones, numbered from 0."""
    shown = 0

    def callback(info):
        nonlocal shown
        if info["i"] >= replayed_steps and not replay.replaying:
            trajectory({**info, "i": shown})
            shown += 1
    return callback


def takes_noise_sampler(sampler: Callable) -> bool:
    """Whether a sampler function has a `noise_sampler` argument (k-diffusion's convention for its step noise)."""
    try:
        return "noise_sampler" in inspect.signature(sampler).parameters
    except (TypeError, ValueError):
        return False


def generate(denoiser, sampler: Callable, sigmas: torch.Tensor, latent: torch.Tensor, seed: Seed, *,
             cond: Cond | None = None, uncond: Cond | None = None, cfg: float = 1.0, device: torch.device | str = "cpu",
             options: dict | None = None, callback: Callable | None = None, record: bool = False,
             wrap: Callable | None = None, resume: PartWay | None = None) -> Sampled:
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

    out = sample(sampler, model, x0, sigmas, seed, callback=watched(callback, explain), options=options, record=record,
                 resume=resume, wrap=wrap)
    check_finite_end(out, explain)
    return out._replace(samples=fmt.from_network(out.samples.float()), denoised=fmt.from_network(out.denoised.float()))


def watched(callback: Callable | None, explain: Callable[[str], str]) -> Callable:
    """A sampler callback that stops the run when the first step's denoised estimate is not finite (the error is
    explain(where)), and passes every step on to `callback`."""
    def watch(info):
        if info["i"] == 0 and not is_finite(info["denoised"]):
            sigma = float(torch.as_tensor(info["sigma"]).reshape(-1)[0])
            raise ValueError(explain(f"at the first step (sigma {sigma:g})"))
        if callback is not None:
            callback(info)
    return watch


def check_finite_end(out: Sampled, explain: Callable[[str], str]) -> None:
    """A run's samples and last denoised estimate must be finite; the error is explain("at the end")."""
    if not is_finite(out.samples, out.denoised):
        raise ValueError(explain("at the end"))
