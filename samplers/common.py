"""Shared pieces of the samplers: the sampler record, seeded CPU noise, and small step helpers."""
import numbers
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True, kw_only=True)
class SamplerSpec:
    """A sampler function with the facts nodes and benchmarks show about it (keyword arguments only)."""

    fn: Callable
    calls_per_step: float  # model evaluations per step (average for adaptive or first-step extras)
    order: int  # order of accuracy of the deterministic method at full order (tests/unit/test_samplers_order.py)
    stochastic: bool
    summary: str


def split_extra_args(extra_args):
    """Separate the noise seed from the arguments that go to the model."""
    extra_args = dict(extra_args or {})
    seed = extra_args.pop("seed", None)
    return extra_args, seed


def prepare(x, extra_args, noise_sampler=None):
    """A sampler's start: the model's arguments (seed removed), the noise source, and ones to broadcast sigma."""
    extra_args, seed = split_extra_args(extra_args)
    noise_sampler = seeded_noise_sampler(x, seed) if noise_sampler is None else noise_sampler
    return extra_args, noise_sampler, x.new_ones([x.shape[0]])


def item_seeds(seed, batch):
    """One seed per batch item: an int s (None: 0) gives s, s + 1, ..., s + batch - 1; a sequence or 1-D tensor
    gives each item its own."""
    if seed is None or isinstance(seed, numbers.Integral) or (isinstance(seed, torch.Tensor) and seed.ndim == 0):
        first = 0 if seed is None else int(seed)
        return [(first + k) % 2**64 for k in range(batch)]  # wrapped as torch wraps negative seeds
    seeds = [int(s) for s in (seed.tolist() if isinstance(seed, torch.Tensor) else seed)]
    if len(seeds) != batch:
        raise ValueError(f"seed: got {len(seeds)} seeds for a batch of {batch}; give one per item, or one int")
    return [s % 2**64 for s in seeds]


class NoiseStream:
    """Gaussian noise of one shape, item k drawn from its own CPU generator seeded item_seeds(seed)[k] (float32, then
    moved to `device` and `dtype`): one seed, one picture on any device and at any batch size. `draws` counts the
    draws taken."""

    def __init__(self, shape, seed, device="cpu", dtype=torch.float32):
        self.shape, self.device, self.dtype = tuple(shape), device, dtype
        self.seeds = item_seeds(seed, self.shape[0])
        self.generators = [torch.Generator(device="cpu").manual_seed(s) for s in self.seeds]
        self.draws = 0

    @classmethod
    def resumed(cls, shape, seed, draws, device="cpu", dtype=torch.float32):
        """The stream of `seed` after its first `draws` draws."""
        stream = cls(shape, seed, device, dtype)
        for _ in range(draws):
            stream.draw()
        return stream

    def draw(self):
        """The next draw, on the CPU in float32."""
        self.draws += 1
        return torch.stack([torch.randn(self.shape[1:], generator=g, dtype=torch.float32, device="cpu")
                            for g in self.generators])

    def __call__(self, sigma=None, sigma_next=None):
        """The next draw as a sampler's noise_sampler(sigma, sigma_next) gives it."""
        return self.draw().to(device=self.device, dtype=self.dtype)


def seeded_noise_sampler(x, seed):
    """A sampler's own step noise when its host gives only a seed: the NoiseStream of that seed after its first draw,
    which is the start noise (ComfyUI's prepare_noise for one item), so step noise never repeats the start noise."""
    return NoiseStream.resumed(x.shape, seed, 1, x.device, x.dtype)


def to_d(x, sigma, denoised):
    """The probability-flow ODE derivative dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022, eq. 4)."""
    return (x - denoised) / append_dims(sigma, x.ndim)


def append_dims(value, ndim):
    """Broadcast a per-batch (or scalar) tensor against a sample of `ndim` dimensions."""
    value = torch.as_tensor(value)
    return value.reshape(value.shape + (1,) * (ndim - value.ndim))


def ancestral_step(sigma_from, sigma_to, eta=1.0):
    """Split a step into a deterministic part down to sigma_down and fresh noise sigma_up (Song et al. 2021)."""
    if not eta or sigma_to == 0:
        return sigma_to, sigma_to * 0
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def report(callback, i, x, sigma, sigma_hat, denoised):
    """Tell the host about a finished step: drives progress bars, previews and the Stop button."""
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})
