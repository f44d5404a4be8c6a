"""Schedules fitted to a model: the noise levels that bring a sampler closest to a teacher trajectory, found by
dynamic programming over a grid of noise levels (Optimal Stepsize Distillation, Pei et al. 2025, arXiv:2503.21774).

The teacher is the same sampler on the grid refined `teacher_substeps` times; its state at grid node j is the sample
it hands the model at that noise level. The student takes K steps on grid nodes, starting at sigma_max, and ends with
a step to 0. The recursion (OSS, Algorithm 1): best[m][j] is the path of m steps from node 0 to node j whose sample at
j is closest (RMSE) to the teacher's there, chosen among best[m-1][k] + (k -> j) for every k < j; the fitted schedule
is, among best[K-1][j] + (j -> 0), the one whose final sample is closest to the teacher's final sample (or the one a
caller's `choose` prefers: distance to a teacher rewards a blurred last jump, so a judge of the pictures may choose).

The sampler runs with the options it will sample with (sampler_options, e.g. UniPC's order), the teacher's runs too.
Multistep samplers (dpmpp_2m, uni_pc, ...) carry history: a step from the state kept at (m-1, k) uses that path's own
history, because every candidate is made by replaying the real sampler on the path so far. The replay runs on a whole
K-step schedule (the path, then the next grid nodes, then 0), so that choices a sampler makes from the schedule's
length (UniPC's lower orders near the end) are the ones it makes in the fitted schedule, and stops when the model is
asked for the path's last node: that sample is the candidate state. A memo of model answers, keyed by the exact input
sample and noise level, makes a replay cost one new model call per DP node, as the paper's stored states do.
"""
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..samplers import SAMPLER_SPECS, SAMPLERS
from ..schedules import get_sigmas
from ..schedules.validation import check_choice, check_schedule_output, check_sigma_range, check_steps
from .digest import fingerprint
from .equal_cost import steps_within

PAPER = "Optimal Stepsize Distillation (Pei et al. 2025, arXiv:2503.21774)"
UNFITTABLE = ("dpm_fast", "dpm_adaptive")  # choose their own steps: a schedule cannot steer them


@dataclass(frozen=True)
class FittedSchedule:
    """A fitted schedule and the facts that say what it is worth."""

    sigmas: torch.Tensor  # descending float32 CPU tensor ending in 0
    sampler: str
    budget: int  # model calls asked for
    steps: int
    calls: int  # model calls the sampler makes on these sigmas (<= budget)
    error: float  # RMSE of the final sample against the teacher's final sample
    fit_calls: int  # model calls the search made up to this schedule (teacher excluded; shared between budgets)
    options: dict = field(default_factory=dict)  # the sampler's options it was fitted with (e.g. {"order": 1})

    @property
    def note(self) -> str:
        """One line: steps and calls, and what is left of the budget when the sampler's steps do not divide it."""
        unused = self.budget - self.calls
        left = f" ({unused} of the budget of {self.budget} unused)" if unused else ""
        return f"{sampler_label(self.sampler, self.options)}: {self.steps} steps = {self.calls} model calls{left}"


def sampler_label(sampler: str, options: dict) -> str:
    """The sampler's name with the options it runs with, e.g. 'uni_pc_bh2 order=1'."""
    return " ".join([sampler, *(f"{name}={value}" for name, value in sorted(options.items()))])


def parse_sampler_label(label: str) -> tuple[str, dict]:
    """(sampler, options) from a sampler_label ('uni_pc_bh2 order=1'): numeric options, whole numbers as ints."""
    name, *pairs = label.split()
    options = {}
    for pair in pairs:
        option, _, value = pair.partition("=")
        try:
            options[option] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            raise ValueError(f"sampler: {label!r}: options are written option=number after the name, e.g. "
                             f"'uni_pc_bh2 order=1'") from None
    return name, options


@dataclass(frozen=True)
class Finish:
    """One candidate of the final choice: the best K-step path ending at one last noise level, then 0."""

    sigmas: torch.Tensor
    final: torch.Tensor  # the sample it ends with
    error: float  # RMSE of that sample against the teacher's final sample


def closest_to_teacher(finishes: list[Finish]) -> int:
    """The OSS choice: the finish whose final sample is closest to the teacher's."""
    return min(range(len(finishes)), key=lambda i: finishes[i].error)


class Stopped(Exception):
    """Raised inside a replay when the model is asked for the node whose sample is wanted."""

    def __init__(self, x):
        super().__init__("replay reached its node")
        self.x = x


class Memo:
    """The denoiser with its answers remembered by exact input (sample bytes and noise level); counts real calls."""

    def __init__(self, model: Callable, extra_args: dict | None):
        self.model, self.extra_args = model, dict(extra_args or {})
        self.answers, self.calls = {}, 0

    def __call__(self, x, sigma, **extra_args):
        key = fingerprint(x, sigma)
        if key not in self.answers:
            self.calls += 1
            self.answers[key] = self.model(x, sigma, **extra_args)
        return self.answers[key]


def check_fittable(sampler: str) -> int:
    """The sampler's whole number of model calls per step; a ValueError for one a schedule cannot be fitted to."""
    check_choice(sampler, SAMPLERS, "sampler")
    spec = SAMPLER_SPECS[sampler]
    if spec.stochastic or sampler in UNFITTABLE or spec.calls_per_step != int(spec.calls_per_step):
        fittable = ", ".join(n for n in SAMPLERS if n in fittable_samplers())
        raise ValueError(f"sampler: {sampler!r} {'adds random noise' if spec.stochastic else 'chooses its own steps'}, "
                         f"so no schedule fits it; choose a deterministic one: {fittable}")
    return int(spec.calls_per_step)


def fittable_samplers() -> list[str]:
    """The samplers a schedule can be fitted to: deterministic, a fixed whole number of calls per step."""
    return [name for name, spec in SAMPLER_SPECS.items() if not spec.stochastic and name not in UNFITTABLE
            and spec.calls_per_step == int(spec.calls_per_step)]


def steps_for(sampler: str, calls: int, sigma_min: float, sigma_max: float) -> tuple[int, int]:
    """(steps, calls): the most steps of `sampler` whose model calls (counted on a dry run) stay within `calls`."""
    return steps_within(SAMPLERS[sampler], lambda n: get_sigmas("karras", n, sigma_min=sigma_min, sigma_max=sigma_max),
                        check_steps(calls, "calls"))


def log_grid(sigma_min: float, sigma_max: float, size: int) -> torch.Tensor:
    """`size` noise levels evenly spaced in log sigma from sigma_max down to sigma_min (float32)."""
    ramp = torch.linspace(0, 1, size, dtype=torch.float64)
    return (math.log(sigma_max) + ramp * (math.log(sigma_min) - math.log(sigma_max))).exp().float()


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Root-mean-square difference of two samples."""
    return float(((a.double() - b.double()) ** 2).mean().sqrt())


def fit_schedules(model: Callable, noise: torch.Tensor, sigma_min: float, sigma_max: float, sampler: str,
                  budgets: Sequence[int], *, grid_size: int = 24, teacher_substeps: int = 4,
                  latent: torch.Tensor | None = None, extra_args: dict | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  choose: Callable[[list[Finish]], int] = closest_to_teacher,
                  sampler_options: dict | None = None) -> list[FittedSchedule]:
    """One fitted schedule per budget of model calls (sharing one teacher and one memo of model answers).

    model(x, sigma, **extra_args) -> denoised (k-diffusion convention); the samples start at latent + sigma_max *
    noise (latent: zeros when not given), one batch whose items all count in the error. progress(done, total) after
    every DP node; it may raise to stop the fit. choose(finishes) -> index picks among the best paths ending at each
    last noise level (default: the one closest to the teacher). sampler_options (e.g. {"order": 1}) go to every run
    of the sampler, the teacher's included.
    """
    sigma_min, sigma_max = check_sigma_range(sigma_min, sigma_max)
    per_step = check_fittable(sampler)
    options = dict(sampler_options or {})  # checked by the sampler itself, before the teacher's first model call
    run = functools.partial(SAMPLERS[sampler], **options)
    grid_size, teacher_substeps = check_steps(grid_size, "grid_size"), check_steps(teacher_substeps, "teacher_substeps")
    plans = [(budget, *steps_for(sampler, budget, sigma_min, sigma_max)) for budget in budgets]
    too_many = [steps for _, steps, _ in plans if steps > grid_size]
    if too_many:
        raise ValueError(f"grid_size: {grid_size} noise levels cannot hold {max(too_many)} steps; give at least "
                         f"{max(too_many)}")
    grid = log_grid(sigma_min, sigma_max, grid_size)
    total = len(grid) - 1 + sum(_nodes(steps, grid_size) for _, steps, _ in plans)
    done = 0

    def tick():
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    start = (torch.zeros_like(noise) if latent is None else latent) + float(grid[0]) * noise
    teacher_states, teacher_final = _teacher(model, start, grid, run, per_step, teacher_substeps, extra_args, tick)
    memo = Memo(model, extra_args)
    fits = []
    for budget, steps, calls in plans:
        finishes = _fit(memo, start, grid, sampler, run, per_step, steps, teacher_states, teacher_final, tick)
        chosen = finishes[choose(finishes)]
        fits.append(FittedSchedule(check_schedule_output(chosen.sigmas, "fitted", {"grid_size": grid_size}), sampler,
                                   budget, steps, calls, chosen.error, memo.calls, options))
    return fits


def fit_schedule(model: Callable, noise: torch.Tensor, sigma_min: float, sigma_max: float, sampler: str,
                 calls: int, **options) -> FittedSchedule:
    """The schedule for `sampler` within `calls` model calls whose final sample is closest to the teacher's (OSS)."""
    return fit_schedules(model, noise, sigma_min, sigma_max, sampler, [calls], **options)[0]


def _nodes(steps, size):
    """DP nodes of a K-step fit on a grid of `size`: (level m, node j) for m = 1..K-1 with m <= j <= size-K+m, and the
    K-step finishes."""
    return (steps - 1) * (size - steps + 1) + (size - steps + 1 if steps > 1 else 1)


def _teacher(model, start, grid, run, per_step, substeps, extra_args, tick):
    """The teacher's sample at every grid node (what it hands the model there) and its final sample."""
    fine = [grid[:1]]
    for a, b in zip(grid[:-1], grid[1:]):
        ramp = torch.linspace(0, 1, substeps + 1, dtype=torch.float64)[1:]
        fine.append((math.log(a) + ramp * (math.log(b) - math.log(a))).exp().float())
    sigmas = torch.cat([*fine, grid.new_zeros(1)])
    inputs = []

    def recording(x, sigma, **kwargs):
        inputs.append(x)
        if len(inputs) > 1 and (len(inputs) - 1) % (per_step * substeps) == 0:
            tick()  # reached the next grid node
        return model(x, sigma, **kwargs)

    final = run(recording, start, sigmas, extra_args=extra_args, disable=True)
    states = [inputs[per_step * substeps * n] for n in range(len(grid))]
    return states, final


def _replay(memo, start, sigmas, sampler, run, per_step, stop_at):
    """The sampler (`run`, named `sampler`) on `sigmas` from `start`; with stop_at = n, the sample it hands the model
    at sigmas[n] instead."""
    count = 0

    def model(x, sigma, **kwargs):
        nonlocal count
        if stop_at is not None and count == per_step * stop_at:
            at = float(torch.as_tensor(sigma).reshape(-1)[0])
            if not math.isclose(at, float(sigmas[stop_at]), rel_tol=1e-6):
                raise ValueError(f"sampler: {sampler!r} does not call the model once per noise level in order "
                                 f"(call {count} at sigma {at:g}, expected {float(sigmas[stop_at]):g}); it cannot be "
                                 f"fitted")
            raise Stopped(x)
        count += 1
        return memo(x, sigma, **kwargs)

    try:
        return run(model, start, sigmas, extra_args=memo.extra_args, disable=True)
    except Stopped as reached:
        return reached.x


def _fit(memo, start, grid, sampler, run, per_step, steps, teacher_states, teacher_final, tick):
    """The best K-step path from node 0 to each last node, then 0, by the OSS recursion (one Finish per last node)."""
    size = len(grid)
    zero = grid.new_zeros(1)

    def schedule(path):  # the path, then the next grid nodes, then 0: a whole K-step schedule
        tail = list(range(path[-1] + 1, path[-1] + steps - len(path) + 1))
        return torch.cat([grid[list(path) + tail], zero])

    best = {0: (0.0, (0,))}  # node -> (error at the node, path) for the current level
    for level in range(1, steps):
        nodes = range(level, size - steps + level + 1)
        best_next = {}
        for j in nodes:
            for k, (_, path) in best.items():
                if k >= j:
                    continue
                candidate = path + (j,)
                state = _replay(memo, start, schedule(candidate), sampler, run, per_step, level)
                error = rmse(state, teacher_states[j])
                if j not in best_next or error < best_next[j][0]:
                    best_next[j] = (error, candidate)
            tick()
        best = best_next
    finishes = []
    for _, path in best.values():
        sigmas = torch.cat([grid[list(path)], zero])
        final = _replay(memo, start, sigmas, sampler, run, per_step, None)
        finishes.append(Finish(sigmas, final, rmse(final, teacher_final)))
        tick()
    return finishes
