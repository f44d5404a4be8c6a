"""Fewer steps for the same picture: fixed schedules against the fitted ones on the bundled model, at equal calls.

For 4, 6, 8, 10 and 20 model calls and each schedule (karras, exponential, AYS-style, GITS-style and the schedule
fitted to this model by scripts/fit_bundled_schedules.py, OSS, Pei et al. 2025), with dpmpp_2m, uni_pc, lms
(variable-step Adams-Bashforth of order 4; the pack's ipndm_v is the same method) and uni_pc_bh2 at order 1 (the
first-order predictor with its corrector, second order together): the distance of the pictures to a
200-step reference (dpmpp_2m + karras; mean over pictures of the pixel RMSE, in 8-bit levels) and the five adherence
scores of benchmarks/adherence.py, on its held-out captions (seed = caption index, cfg 5). The fitted schedules were
fitted on training-distribution captions, never on these.

AYS-style and GITS-style: the published SD1.5 levels (Sabour et al. 2024; Chen et al. 2024) span 14.6 ... 0.029, not
this model's 157 ... 0.01, so they are mapped affinely in log sigma onto the model's range (first level to sigma_max,
last to sigma_min): the same relative placement of the steps in log sigma.
Prints a markdown table; writes benchmarks/results/fewer_steps.md (and .json, the per-cell results that later runs
with --schedules reuse) and docs/fewer_steps.png; the reference pictures are kept in out/fewer_steps/.
--adherence-only skips the reference and the distances (200 steps a caption), so that the adherence goal can be
measured on many captions: results in benchmarks/results/fewer_steps_adherence.md, no plot.
Run: .venv/bin/python benchmarks/fewer_steps.py [--count 16] [--calls 4,6,8,10,20] [--schedules karras,fitted]
     .venv/bin/python benchmarks/fewer_steps.py --adherence-only --count 240 --calls 8,20 --schedules karras,fitted \
         --samplers "dpmpp_2m,uni_pc_bh2 order=1"
The adherence goal compares each sampler's 8 calls with 20-call dpmpp_2m + karras.
"""
import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import NamedTuple

import torch

from adherence import CHECKS, EVALUATION_SEED, tally  # benchmarks/adherence.py, beside this script
from diffusion_blocks.networks import load_text_encoder, load_unet
from diffusion_blocks.networks.prediction import Cond, Denoiser
from diffusion_blocks.pipeline import generate
from diffusion_blocks.pipeline.fit_schedule import parse_sampler_label, steps_for
from diffusion_blocks.pipeline.fit_store import load, sigmas_of
from diffusion_blocks.samplers import SAMPLERS
from diffusion_blocks.schedules import get_sigmas
from diffusion_blocks.training.scenes import sample_scenes
from diffusion_blocks.views.pixels import to_uint8

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "models" / "diffusion_blocks_shapes.safetensors"
FITTED = ROOT / "models" / "diffusion_blocks_shapes.fitted.json"
SCHEDULES = ("karras", "exponential", "ays", "gits", "fitted")
SAMPLER_NAMES = ("dpmpp_2m", "uni_pc", "lms", "uni_pc_bh2 order=1")  # a name, then options (option=value)
REFERENCE = ("dpmpp_2m", "karras", 200)
REFERENCE_CACHE = ROOT / "out" / "fewer_steps"
CFG = 5.0


def mapped(name: str, steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """A published SD1.5 schedule (ays_sd1, gits) moved affinely in log sigma onto [sigma_min, sigma_max]."""
    levels = get_sigmas(name, steps).double()[:-1]
    low, high = math.log(levels[-1]), math.log(levels[0])
    fraction = (levels.log() - low) / (high - low)
    moved = (math.log(sigma_min) + fraction * (math.log(sigma_max) - math.log(sigma_min))).exp()
    return torch.cat([moved, moved.new_zeros(1)]).float()


def schedule(name, label, calls, denoiser, fitted):
    """The sigmas of schedule `name` for sampler `label` at `calls` model calls (None: no fitted schedule for it)."""
    sigma_min, sigma_max = float(denoiser.schedule.sigma_min), float(denoiser.schedule.sigma_max)
    sampler, options = parse_sampler_label(label)
    steps, _ = steps_for(sampler, calls, sigma_min, sigma_max)
    if name == "fitted":
        try:
            return sigmas_of(fitted, sampler, calls, options)
        except ValueError:
            return None  # not fitted
    if name in ("ays", "gits"):
        return mapped({"ays": "ays_sd1", "gits": "gits"}[name], steps, sigma_min, sigma_max)
    return get_sigmas(name, steps, model=denoiser.schedule)


def pictures(denoiser, encoder, captions, seeds, label, sigmas):
    """Float pixels in [0, 1], (B, H, W, 3), of the captions drawn with these sigmas (as text_to_image draws them)."""
    cond = Cond(torch.cat([encoder.encode(c)[0] for c in captions]))
    latent = torch.zeros(len(captions), 3, 64, 64)
    sampler, options = parse_sampler_label(label)
    out = generate(denoiser, SAMPLERS[sampler], sigmas, latent, list(seeds), cond=cond,
                   uncond=Cond(encoder.encode("")[0]), cfg=CFG, options=options)
    return ((out.samples.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)


def distances(drawn: torch.Tensor, reference: torch.Tensor) -> list[float]:
    """Per-picture pixel RMSE in 8-bit levels of pictures in [0, 1] against the reference's."""
    return (255 * ((drawn - reference) ** 2).mean(dim=(1, 2, 3)).sqrt()).tolist()


def run(unet, encoder, count, cells, batch, fitted_path, cache, log, distances=True):
    """Fill `cache` (cell key -> per-picture RMSEs in 8-bit levels, adherence counts, sigmas) for these cells; the
    200-step reference pictures are kept in out/ and reused by later runs with the same count (distances=False: no
    reference, no RMSEs)."""
    denoiser = Denoiser(unet)
    fitted = load(fitted_path) if any(name == "fitted" for _, name, _ in cells) else None
    scenes = sample_scenes(EVALUATION_SEED, count, held_out=True)
    plans = {cell: schedule(cell[1], cell[0], cell[2], denoiser, fitted) for cell in cells}
    plans = {cell: sigmas for cell, sigmas in plans.items() if sigmas is not None}
    reference_file = REFERENCE_CACHE / f"reference_{count}.pt"
    references = torch.load(reference_file) if reference_file.is_file() else None
    errors = {cell: [] for cell in plans}
    images = {cell: [] for cell in plans}
    computed = []
    started = time.perf_counter()
    for first in range(0, count, batch):
        chunk = scenes[first:first + batch]
        captions, seeds = [s.caption for s in chunk], range(first, first + len(chunk))
        if references is None and distances:
            ref_sampler, ref_schedule, ref_steps = REFERENCE
            computed.append(pictures(denoiser, encoder, captions, seeds, ref_sampler,
                                     get_sigmas(ref_schedule, ref_steps, model=denoiser.schedule)))
        reference = references[first:first + len(chunk)] if references is not None else computed[-1] if computed \
            else None
        for cell, sigmas in plans.items():
            drawn = pictures(denoiser, encoder, captions, seeds, cell[0], sigmas)
            if reference is not None:
                errors[cell] += distances(drawn, reference)
            images[cell].append(to_uint8(drawn.permute(0, 3, 1, 2) * 2 - 1))
        log(f"{first + len(chunk)}/{count} captions ({time.perf_counter() - started:.0f} s)")
    if computed:
        REFERENCE_CACHE.mkdir(parents=True, exist_ok=True)
        torch.save(torch.cat(computed), reference_file)
    for cell in plans:
        scores = tally(scenes, torch.cat(images[cell]).numpy())
        cache[key(cell)] = {"rmse": errors[cell], "scores": {c: list(v) for c, v in scores.items()},
                            "sigmas": plans[cell].tolist()}
    return time.perf_counter() - started


def key(cell):
    return "|".join(map(str, cell))


class Cell(NamedTuple):
    """One sampler, schedule and number of calls: its distances to the reference and its adherence counts."""

    errors: list  # per-picture RMSE to the reference, 8-bit levels (empty with --adherence-only)
    scores: dict  # check -> (passed, total)
    sigmas: torch.Tensor

    @property
    def rmse(self) -> float:
        """Mean over pictures (NaN without distances)."""
        return statistics.fmean(self.errors) if self.errors else math.nan


def standard_error(values) -> float:
    """Standard error of the mean of `values` (sample standard deviation over the square root of their number)."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan


def summary(cache):
    """{(sampler, schedule, calls): Cell} from the cache."""
    results = {}
    for text, entry in cache.items():
        sampler, name, calls = text.split("|")
        results[(sampler, name, int(calls))] = Cell(entry["rmse"], {c: tuple(v) for c, v in entry["scores"].items()},
                                                    torch.tensor(entry["sigmas"]))
    return results


def table(results, calls_list):
    """Markdown: one row per sampler, schedule and calls; distance to the reference and the five checks."""
    lines = ["| sampler | calls | schedule | RMSE to 200-step ref (8-bit levels, ± standard error) | "
             + " | ".join(CHECKS) + " |",
             "|---|---|---|---|" + "---|" * len(CHECKS)]
    for sampler in SAMPLER_NAMES:
        for calls in calls_list:
            for name in SCHEDULES:
                if (sampler, name, calls) not in results:
                    continue
                cell = results[(sampler, name, calls)]
                checks = " | ".join(f"{p / t:.1%}" if t else "-"
                                    for p, t in (cell.scores.get(c, (0, 0)) for c in CHECKS))
                distance = "-" if math.isnan(cell.rmse) else f"{cell.rmse:.2f} ± {standard_error(cell.errors):.1f}"
                lines.append(f"| {sampler} | {calls} | {name} | {distance} | {checks} |")
    return "\n".join(lines)


def goals(results):
    """The issue's goals at 8 calls, each with its figures: adherence within 2 points of 20-step karras (the reference's
    sampler, dpmpp_2m) on every check, and the fitted schedule's distance at least 30% below the best fixed
    schedule's."""
    lines = []
    baseline = results.get((REFERENCE[0], "karras", 20))
    for sampler in SAMPLER_NAMES:
        fitted = results.get((sampler, "fitted", 8))
        if fitted is None:
            continue
        fixed = {name: cell for name in SCHEDULES if name != "fitted"
                 and (cell := results.get((sampler, name, 8))) is not None and not math.isnan(cell.rmse)}
        if fixed and not math.isnan(fitted.rmse):
            best = min(fixed, key=lambda name: fixed[name].rmse)
            gain = 1 - fitted.rmse / fixed[best].rmse
            paired = [a - b for a, b in zip(fitted.errors, fixed[best].errors)]  # same captions and seeds
            lines.append(f"- {sampler}, 8 calls: fitted RMSE {fitted.rmse:.2f} vs best fixed ({best}) "
                         f"{fixed[best].rmse:.2f}: {gain:.0%} lower ({'met' if gain >= 0.30 else 'not met'}, goal >= "
                         f"30%); per picture {statistics.fmean(paired):+.1f} ± {standard_error(paired):.1f} (paired "
                         f"standard error), medians {statistics.median(fitted.errors):.1f} vs "
                         f"{statistics.median(fixed[best].errors):.1f}")
        if baseline is None:
            continue
        gaps = []
        for check in CHECKS:
            (p, t), (bp, bt) = fitted.scores.get(check, (0, 0)), baseline.scores.get(check, (0, 0))
            if t and bt:
                gaps.append((check, 100 * (p / t - bp / bt)))
        worst = min(gaps, key=lambda g: g[1])
        lines.append(f"- {sampler}, 8 calls fitted vs 20-call {REFERENCE[0]} karras, adherence points: "
                     + ", ".join(f"{c} {g:+.1f}" for c, g in gaps)
                     + f" ({'met' if worst[1] >= -2 else 'not met'}, goal: none below -2)")
    return "\n".join(lines)


def plot(results, calls_list, path):
    """Error against calls, one line per schedule, one panel per sampler (log error axis), drawn with Pillow."""
    from PIL import Image, ImageDraw, ImageFont

    from diffusion_blocks.views.plot import PALETTE

    panel_w, height, pad = 520, 420, 60
    image = Image.new("RGB", (panel_w * len(SAMPLER_NAMES), height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    values = [cell.rmse for cell in results.values() if cell.rmse > 0]
    low, high = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    for p, sampler in enumerate(SAMPLER_NAMES):
        x0, x1, y0, y1 = p * panel_w + pad, (p + 1) * panel_w - 20, 40, height - 50

        def to_xy(calls, value):
            x = x0 + (x1 - x0) * (calls_list.index(calls)) / max(len(calls_list) - 1, 1)
            y = y1 - (y1 - y0) * (math.log10(value) - low) / max(high - low, 1)
            return x, y

        draw.rectangle([x0, y0, x1, y1], outline=(30, 30, 30))
        for e in range(low, high + 1):
            y = to_xy(calls_list[0], 10.0 ** e)[1]
            draw.line([(x0, y), (x1, y)], fill=(225, 225, 225))
            draw.text((x0 - 6, y), f"{10.0 ** e:g}", font=font, fill="black", anchor="rm")
        for calls in calls_list:
            x = to_xy(calls, 10.0 ** low)[0]
            draw.text((x, y1 + 6), str(calls), font=font, fill="black", anchor="ma")
        draw.text(((x0 + x1) / 2, 12), f"{sampler}: RMSE to 200-step reference (8-bit levels)", font=font,
                  fill="black", anchor="ma")
        draw.text(((x0 + x1) / 2, height - 22), "model calls", font=font, fill="black", anchor="ma")
        for s, name in enumerate(SCHEDULES):
            points = [to_xy(c, results[(sampler, name, c)].rmse) for c in calls_list if (sampler, name, c) in results]
            colour = PALETTE[s % len(PALETTE)]
            if len(points) > 1:
                draw.line(points, fill=colour, width=3 if name == "fitted" else 2)
            for x, y in points:
                draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
            draw.text((x1 - 8, y0 + 10 + 18 * s), name, font=font, fill=colour, anchor="ra")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=16, help="held-out captions (about 45 s each on 2 idle CPU cores)")
    parser.add_argument("--calls", default="4,6,8,10,20")
    parser.add_argument("--schedules", default=",".join(SCHEDULES),
                        help="a subset (other cells come from the cache next to --results); empty: redraw only")
    parser.add_argument("--samplers", default=",".join(SAMPLER_NAMES), help="a subset of " + ", ".join(SAMPLER_NAMES))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--fitted", default=str(FITTED), help="fitted schedules (scripts/fit_bundled_schedules.py)")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "fewer_steps.md"))
    parser.add_argument("--plot", default=str(ROOT / "docs" / "fewer_steps.png"))
    parser.add_argument("--adherence-only", action="store_true",
                        help="no 200-step reference and no distances (adherence on many captions); other results file")
    args = parser.parse_args()
    if args.adherence_only and args.results == parser.get_default("results"):
        args.results = str(ROOT / "benchmarks" / "results" / "fewer_steps_adherence.md")
    calls_list = [int(c) for c in args.calls.split(",")]
    names = [n.strip() for n in args.schedules.split(",") if n.strip()]  # none: only redraw from the cache
    unknown = sorted(set(names) - set(SCHEDULES))
    if unknown:
        parser.error(f"--schedules: unknown {', '.join(unknown)}; valid: {', '.join(SCHEDULES)}")
    results_md = Path(args.results)
    cache_file = results_md.with_suffix(".json")
    stored = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    cache = stored.get("cells", {}) if stored.get("count") == args.count else {}
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    if not set(samplers) <= set(SAMPLER_NAMES):
        parser.error(f"--samplers: valid: {', '.join(SAMPLER_NAMES)}")
    cells = [(s, n, c) for c in calls_list for s in samplers for n in names]
    seconds = 0.0
    if cells:
        unet, encoder = load_unet(str(BUNDLED)), load_text_encoder(str(BUNDLED))
        seconds = run(unet, encoder, args.count, cells, args.batch, Path(args.fitted), cache,
                      lambda line: print(line, flush=True), distances=not args.adherence_only)
    results_md.parent.mkdir(parents=True, exist_ok=True)
    stored = json.loads(cache_file.read_text()) if cache_file.is_file() else {}  # another run may have added cells
    if stored.get("count") == args.count:
        cache = {**stored["cells"], **cache}
    cache_file.write_text(json.dumps({"count": args.count, "cells": cache}))
    results = summary(cache)
    all_calls = sorted({c for _, _, c in results})
    sampler, name, steps = REFERENCE
    reference = "none (adherence only)" if args.adherence_only else f"{steps} steps {sampler} + {name}"
    report = (f"Fewer steps, {args.count} held-out captions (seed {EVALUATION_SEED}), cfg {CFG:g}, bundled model, "
              f"CPU (last run {seconds:.0f} s). Reference: {reference}. "
              f"Fitted: {Path(args.fitted).name} (OSS, Pei et al. 2025; training-distribution captions). AYS/GITS: "
              f"SD1.5 levels mapped affinely in log sigma onto 0.01 ... 157.\n\n{table(results, all_calls)}\n\n"
              f"Goals:\n{goals(results)}\n\nSchedules at 8 calls:\n"
              + "\n".join(f"- {s} {n}: {', '.join(f'{v:.3g}' for v in results[(s, n, 8)].sigmas.tolist())}"
                          for s in SAMPLER_NAMES for n in SCHEDULES if (s, n, 8) in results) + "\n")
    print(report)
    results_md.write_text(report)
    if not args.adherence_only:
        plot(results, all_calls, Path(args.plot))


if __name__ == "__main__":
    main()
