"""How close any schedule brings a sampler to the reference: a direct search of the noise levels on the benchmark's own
measure, on training-distribution captions, then judged on held-out captions (a bound for benchmarks/fewer_steps.py).

The fitted schedules (OSS, Pei et al. 2025) are chosen by dynamic programming on a grid against a teacher. This asks
what any schedule can reach: coordinate descent in log sigma (each interior noise level moved up or down by a step
that halves when no move helps), from the AYS-style schedule (the best fixed one), minimising the mean over pictures
of the pixel RMSE to a many-step reference (dpmpp_2m + karras), on captions of the training distribution
(scripts/fit_bundled_schedules.py's). The gain it reaches on those captions bounds what fitting on them can give; the
held-out figures (the 200-step reference of fewer_steps.py, cached in out/fewer_steps/) say what of it is real.
Prints both; nothing is shipped from here.
Run: .venv/bin/python benchmarks/schedule_search.py [--sampler dpmpp_2m] [--calls 8] [--captions 24] [--held-out 48]
     [--minutes 35]
"""
import argparse
import functools
import math
import statistics
import time

import torch

from adherence import EVALUATION_SEED  # benchmarks/, beside this script
from fewer_steps import (BUNDLED, FITTED, REFERENCE, REFERENCE_CACHE, distances, mapped, pictures, schedule,
                         standard_error)
from diffusion_blocks.networks import load_text_encoder, load_unet
from diffusion_blocks.networks.prediction import Denoiser
from diffusion_blocks.pipeline.fit_schedule import parse_sampler_label, steps_for
from diffusion_blocks.pipeline.fit_store import load
from diffusion_blocks.schedules import get_sigmas
from diffusion_blocks.training.scenes import sample_scenes

MIN_GAP = 0.05  # the least distance in log sigma between neighbouring levels


def search(measure, start: torch.Tensor, best: float, seconds: float, log) -> tuple[torch.Tensor, float]:
    """Coordinate descent in log sigma over the interior levels of `start` (whose measure is `best`; first level and
    the final 0 kept)."""
    levels = start[:-1].double().log()
    step, deadline = 0.4, time.perf_counter() + seconds
    while step >= 0.05 and time.perf_counter() < deadline:
        moved = False
        for i in range(1, len(levels)):
            for sign in (1, -1):
                trial = levels.clone()
                trial[i] += sign * step
                upper = trial[i - 1] - MIN_GAP
                lower = trial[i + 1] + MIN_GAP if i + 1 < len(trial) else -math.inf
                if not lower <= trial[i] <= upper or time.perf_counter() >= deadline:
                    continue
                sigmas = torch.cat([trial.exp(), trial.new_zeros(1)]).float()
                value = measure(sigmas)
                if value < best:
                    levels, best, moved = trial, value, True
                    log(f"  level {i} {'up' if sign > 0 else 'down'} by {step:g}: {value:.2f}")
                    break
        if not moved:
            step /= 2
            log(f"step {step:g} (best {best:.2f})")
    return torch.cat([levels.exp(), levels.new_zeros(1)]).float(), best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sampler", default="dpmpp_2m", help="a name, then options, e.g. 'uni_pc_bh2 order=1'")
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--captions", type=int, default=24, help="training-distribution captions searched on")
    parser.add_argument("--reference-steps", type=int, default=100, help="steps of the searched-on reference")
    parser.add_argument("--held-out", type=int, default=48, help="held-out captions (fewer_steps.py's)")
    parser.add_argument("--minutes", type=float, default=35, help="time for the search")
    args = parser.parse_args()
    log = functools.partial(print, flush=True)
    unet, encoder = load_unet(str(BUNDLED)), load_text_encoder(str(BUNDLED))
    denoiser = Denoiser(unet)
    sigma_min, sigma_max = float(denoiser.schedule.sigma_min), float(denoiser.schedule.sigma_max)
    sampler, options = parse_sampler_label(args.sampler)
    steps, _ = steps_for(sampler, args.calls, sigma_min, sigma_max)
    ays = mapped("ays_sd1", steps, sigma_min, sigma_max)
    shipped = load(FITTED)  # its fitting captions' seeds: the training captions and noise seeds searched on
    fitted = schedule("fitted", args.sampler, args.calls, denoiser, shipped)
    ref_sampler, ref_schedule, ref_steps = REFERENCE

    scenes = sample_scenes(shipped["caption_seed"], args.captions, held_out=False)
    captions, seeds = [s.caption for s in scenes], [shipped["noise_seeds"][0] + i for i in range(len(scenes))]
    started = time.perf_counter()
    reference = pictures(denoiser, encoder, captions, seeds, ref_sampler,
                         get_sigmas(ref_schedule, args.reference_steps, model=denoiser.schedule))
    log(f"reference on {len(captions)} training captions ({time.perf_counter() - started:.0f} s)")

    def measure(sigmas):
        return statistics.fmean(distances(pictures(denoiser, encoder, captions, seeds, args.sampler, sigmas),
                                          reference))

    start_value = measure(ays)
    searched, value = search(measure, ays, start_value, 60 * args.minutes, log)
    fitted_value = measure(fitted) if fitted is not None else math.nan
    log(f"training captions ({args.captions}, {args.reference_steps}-step reference): AYS-style {start_value:.2f}, "
        f"shipped fit {fitted_value:.2f}, searched {value:.2f} ({1 - value / start_value:.0%} below AYS-style)")
    log("searched: " + ", ".join(f"{v:.3g}" for v in searched.tolist()))

    reference_file = REFERENCE_CACHE / f"reference_{args.held_out}.pt"
    if not reference_file.is_file():
        log(f"no held-out reference at {reference_file}: run fewer_steps.py --count {args.held_out} first")
        return
    held = sample_scenes(EVALUATION_SEED, args.held_out, held_out=True)
    held_reference = torch.load(reference_file)
    results = {}
    for name, sigmas in (("AYS-style", ays), ("shipped fit", fitted), ("searched", searched)):
        if sigmas is None:
            continue
        drawn = pictures(denoiser, encoder, [s.caption for s in held], range(len(held)), args.sampler, sigmas)
        results[name] = distances(drawn, held_reference)
    base = results["AYS-style"]
    for name, errors in results.items():
        paired = [a - b for a, b in zip(errors, base)]
        log(f"held-out ({args.held_out}, {ref_steps}-step reference) {name}: {statistics.fmean(errors):.2f} ± "
            f"{standard_error(errors):.1f}, paired vs AYS-style {statistics.fmean(paired):+.2f} ± "
            f"{standard_error(paired):.1f} ({1 - statistics.fmean(errors) / statistics.fmean(base):.0%} below), "
            f"median {statistics.median(errors):.1f}")


if __name__ == "__main__":
    main()
