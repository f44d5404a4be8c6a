"""Samplers on an exact problem: error against model calls, and each sampler's own overhead against ComfyUI's.

The data are a Gaussian mixture, whose ideal denoiser E[x0 | x] is closed-form (devtools/gmm.py), so
the probability-flow ODE has a reference answer (RK4, 4000 steps) and the true data distribution is known.
For every sampler and 5/10/20/40 Karras steps (SD1.x's range) it prints:
  * ode error: mean distance to the ODE reference at sigma_min (deterministic samplers; the schedule's
    final step to 0 left out, as it is the same denoising jump for every sampler),
  * moment error: |mean - true mean| + |cov - true cov|_F of the samples at sigma 0 (all samplers),
and, per step with a model that costs nothing, the time of our sampler over ComfyUI's (same inputs, one run).
Writes benchmarks/results/samplers.md and samplers.png. Run: .venv/bin/python benchmarks/samplers.py
"""
import inspect
import math
import time
from pathlib import Path

import torch

from diffusion_blocks.devtools.comfy_host import import_comfyui, sd1_model_sampling
from diffusion_blocks.devtools.gmm import GaussianMixture, reference_solution
from diffusion_blocks.samplers import SAMPLER_SPECS, SAMPLERS
from diffusion_blocks.schedules import get_sigmas

ROOT = Path(__file__).resolve().parent.parent
STEPS = (5, 10, 20, 40)
SIGMA_MIN, SIGMA_MAX = 0.0291675, 14.614642
RESULTS = ROOT / "benchmarks" / "results"


class CountingModel:
    """The exact denoiser, counting its calls."""

    def __init__(self, mixture):
        self.mixture, self.calls = mixture, 0

    def __call__(self, x, sigma, **extra_args):
        self.calls += 1
        return self.mixture(x, sigma)


def true_moments(mixture):
    means, variances, weights = mixture.means, mixture.stds**2, mixture.weights
    mean = (weights[:, None] * means).sum(0)
    centred = means - mean
    cov = torch.diag_embed(variances[:, None].expand_as(means)) + centred[:, :, None] * centred[:, None, :]
    return mean, (weights[:, None, None] * cov).sum(0)


def moment_error(samples, mean, cov):
    return ((samples.mean(0) - mean).norm() + (torch.cov(samples.T) - cov).norm()).item()


def accuracy_table(mixture, x, reference_at_sigma_min):
    """Per sampler and step count: (model calls, ODE error at sigma_min, moment error of the samples at 0)."""
    mean, cov = true_moments(mixture)
    rows = {}
    for name in SAMPLERS:
        row = []
        for steps in STEPS:
            sigmas = get_sigmas("karras", steps, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX).double()
            model = CountingModel(mixture)
            samples = SAMPLERS[name](model, x, sigmas, extra_args={"seed": 0}, disable=True)
            ode_error = math.nan
            if not SAMPLER_SPECS[name].stochastic:  # stop at sigma_min: the ODE solution there is known
                at_sigma_min = SAMPLERS[name](mixture, x, sigmas[:-1], extra_args={"seed": 0}, disable=True)
                ode_error = (at_sigma_min - reference_at_sigma_min).norm(dim=1).mean().item()
            row.append((model.calls, ode_error, moment_error(samples, mean, cov)))
        rows[name] = row
    return rows


def comfyui_samplers():
    import_comfyui()
    from comfy.k_diffusion import sampling

    return {name: getattr(sampling, f"sample_{name}") for name in SAMPLERS if hasattr(sampling, f"sample_{name}")}


def per_step_seconds(fn, x, sigmas, repeats=5, **kwargs):
    import_comfyui()
    from diffusion_blocks.nodes.k_model import KDiffusionModel  # nodes/ imports comfy: after import_comfyui()

    free_model = KDiffusionModel(lambda x, sigma, **extra: x * 0.5, sd1_model_sampling())  # the sampler's own cost
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn(free_model, x, sigmas, extra_args={}, disable=True, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best / (len(sigmas) - 1)


def overhead_table():
    theirs = comfyui_samplers()
    x = torch.randn(1, 4, 128, 128, generator=torch.Generator().manual_seed(0))
    sigmas = get_sigmas("karras", 30, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    rows = {}
    for name, reference in theirs.items():
        if name in ("dpm_fast", "dpm_adaptive"):
            continue  # ComfyUI's take (sigma_min, sigma_max, n), not a schedule
        noise = lambda sigma, sigma_next: torch.zeros_like(x)  # noqa: E731  (the same free noise for both)
        takes_noise = "noise_sampler" in inspect.signature(reference).parameters
        kwargs = {"noise_sampler": noise} if takes_noise else {}
        rows[name] = (per_step_seconds(SAMPLERS[name], x, sigmas, **kwargs), per_step_seconds(reference, x, sigmas, **kwargs))
    return rows


def plot(rows, floor, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(15, 6.5))
    colours = plt.get_cmap("tab20").colors
    markers = "os^vD"
    for index, (name, row) in enumerate(rows.items()):
        calls = [r[0] for r in row]
        style = dict(color=colours[index % 20], marker=markers[index % 5], ms=4, label=name,
                     linestyle="--" if SAMPLER_SPECS[name].stochastic else "-")
        if not SAMPLER_SPECS[name].stochastic:
            axes[0].loglog(calls, [r[1] for r in row], **style)
        axes[1].loglog(calls, [r[2] for r in row], **style)
    axes[1].axhline(floor, color="black", linewidth=1, label="exact ODE samples (sampling-noise floor)")
    axes[0].set(title="Deterministic samplers: distance to the exact ODE solution at sigma_min",
                xlabel="model calls (with the final step to 0)", ylabel="error")
    axes[1].set(title="All samplers (dashed: stochastic): error of sample mean and covariance",
                xlabel="model calls", ylabel="moment error")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main():
    torch.set_num_threads(2)
    mixture = GaussianMixture(dim=8, components=4, seed=0)
    x = mixture.sample_prior(2048, SIGMA_MAX, seed=1)
    reference = reference_solution(mixture, x, SIGMA_MAX, SIGMA_MIN, steps=4000)
    rows = accuracy_table(mixture, x, reference)
    exact = reference_solution(mixture, reference, SIGMA_MIN, 1e-4, steps=200)
    floor = moment_error(mixture(exact, torch.full((x.shape[0],), 1e-4, dtype=x.dtype)), *true_moments(mixture))
    lines = ["# Samplers on the Gaussian-mixture problem", "",
             "Karras schedule (sigma 14.61 to 0.0292, then 0); 2048 samples in 8 dimensions; seed 0. ODE error: "
             "at sigma_min, without the final step to 0 (deterministic samplers only).",
             f"Moment error of the exact ODE solution itself (the floor set by 2048 samples): {floor:.2e}.", "",
             "| sampler | order | stochastic | " + " | ".join(f"{s} steps: calls / ode error / moment error" for s in STEPS) + " |",
             "|---|---|---|" + "---|" * len(STEPS)]
    for name, row in rows.items():
        spec = SAMPLER_SPECS[name]
        cells = " | ".join(f"{c} / {'-' if math.isnan(e) else f'{e:.2e}'} / {m:.2e}" for c, e, m in row)
        lines.append(f"| {name} | {spec.order} | {'yes' if spec.stochastic else 'no'} | {cells} |")
    overhead = overhead_table()
    lines += ["", "## Sampler overhead per step (model costs nothing; latent 1x4x128x128; 30 steps; best of 5)", "",
              "| sampler | ours (ms/step) | ComfyUI (ms/step) | ours / ComfyUI |", "|---|---|---|---|"]
    for name, (ours, theirs) in overhead.items():
        lines.append(f"| {name} | {ours * 1e3:.3f} | {theirs * 1e3:.3f} | {ours / theirs:.2f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "samplers.md").write_text("\n".join(lines) + "\n")
    plot(rows, floor, RESULTS / "samplers.png")
    print("\n".join(lines))
    print(f"\nwrote {RESULTS / 'samplers.md'} and {RESULTS / 'samplers.png'}")


if __name__ == "__main__":
    main()
