"""Samplers compared at equal cost: for each sampler and schedule, the most steps whose model calls fit a budget.

A step costs one, two or three model calls depending on the sampler, and some save a call on the last step to 0
(Heun finishes with an Euler step, Karras et al. 2022, alg. 1), so calls are counted, not assumed: the sampler is
run on the real sigmas with a free stand-in denoiser that only counts.
"""
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..schedules import get_sigmas
from .run import generate


@dataclass(frozen=True)
class Cell:
    """One picture of a comparison: which sampler and schedule, and the steps and model calls it gets."""

    sampler: str
    schedule: str
    steps: int
    calls: int

    @property
    def caption(self) -> str:
        return f"{self.sampler}, {self.schedule}, {self.steps} steps, {self.calls} calls"


def count_calls(sampler: Callable, sigmas: torch.Tensor, options: dict | None = None) -> int:
    """How many times `sampler` calls its model on these sigmas (a one-number dry run with D(x, sigma) = 0)."""
    calls = 0

    def counting(x, sigma, **extra_args):
        nonlocal calls
        calls += 1
        return torch.zeros_like(x)

    sampler(counting, torch.zeros(1, 1), sigmas, extra_args={"seed": 0}, disable=True, **(options or {}))
    return calls


def steps_within(sampler: Callable, sigmas_for: Callable[[int], torch.Tensor], budget: int,
                 options: dict | None = None) -> tuple[int, int]:
    """(steps, calls): the most steps of the schedule `sigmas_for(steps)` whose model calls stay within `budget`."""
    best = None
    for steps in range(1, budget + 1):
        calls = count_calls(sampler, sigmas_for(steps), options)
        if calls > budget:
            break
        best = (steps, calls)
    if best is None:
        raise ValueError(f"calls: {budget} model calls do not pay for one step of this sampler; give more")
    return best


def equal_cost_cells(samplers: dict[str, Callable], schedules: Sequence[str], budget: int,
                     sigmas_for: Callable[[str, int], torch.Tensor]) -> list[Cell]:
    """A cell per sampler (rows) and schedule (columns), each with the most steps its budget of calls pays for."""
    cells = []
    for name, sampler in samplers.items():
        for schedule in schedules:
            steps, calls = steps_within(sampler, lambda n: sigmas_for(schedule, n), budget)  # noqa: B023
            cells.append(Cell(name, schedule, steps, calls))
    return cells


def compare_at_equal_cost(denoiser, samplers: dict[str, Callable], schedules: Sequence[str], budget: int,
                          latent: torch.Tensor, seed, *, callback: Callable[[int, int], None] | None = None,
                          run: Callable | None = None, **guidance) -> list[tuple[Cell, torch.Tensor]]:
    """(cell, samples in latent units) for every sampler x schedule at the same budget of calls and the same seed;
    `guidance` goes to generate (cond, uncond, cfg, device), or `run(sampler, sigmas, callback) -> samples` samples
    instead (a host's guidance); callback(done, total) after every step."""
    def sigmas_for(schedule, steps):
        return get_sigmas(schedule, steps, model=denoiser.schedule)

    cells = equal_cost_cells(samplers, schedules, budget, sigmas_for)
    total, done = sum(cell.steps for cell in cells), 0
    results = []
    for cell in cells:
        def report(info, before=done):
            if callback is not None:
                callback(before + int(info["i"]) + 1, total)
        sampler, sigmas = samplers[cell.sampler], sigmas_for(cell.schedule, cell.steps)
        if run is not None:
            samples = run(sampler, sigmas, report)
        else:
            samples = generate(denoiser, sampler, sigmas, latent, seed, callback=report, **guidance).samples
        done += cell.steps
        results.append((cell, samples))
    return results
