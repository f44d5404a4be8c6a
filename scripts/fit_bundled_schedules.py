"""Fit schedules to the bundled model (OSS, Pei et al. 2025) and write models/diffusion_blocks_shapes.fitted.json.

Captions come from the training distribution (training/scenes.py, held-out combinations excluded), so the
held-out captions of benchmarks/fewer_steps.py never shape the schedules. One teacher per sampler, shared by budgets.
Of the best paths ending at each last noise level, the one whose pictures pass the most checks of the shapes judge
(training/analyse.py) on those captions is kept (ties: the closest; --choose teacher: the closest to the teacher, the
OSS choice), because with many captions the distance alone prefers a blurred last jump (rounded corners read as
circles). A sampler may carry options after its name ('uni_pc_bh2 order=1': UniPC with the first-order predictor and
its corrector, which few guided steps suit best on this model).
Run: .venv/bin/python scripts/fit_bundled_schedules.py  (the shipped file's settings: 16 captions, grid 16, judge; about
40 minutes on 2 CPU cores; OMP_NUM_THREADS=1 is much faster on a busy machine, and one process per sampler with
--samplers, the records merged, gives the same fits; --budgets fits a part, for experiments)
"""
import argparse
import time
from pathlib import Path

import torch

from diffusion_blocks.networks import load_text_encoder, load_unet
from diffusion_blocks.networks.prediction import Cond, Denoiser
from diffusion_blocks.pipeline.fit_schedule import closest_to_teacher, fit_schedules, parse_sampler_label
from diffusion_blocks.pipeline.fit_store import record, save, weights_hash
from diffusion_blocks.pipeline.guidance import Guided
from diffusion_blocks.pipeline.noise import start_noise
from diffusion_blocks.training.analyse import score
from diffusion_blocks.training.scenes import sample_scenes
from diffusion_blocks.views.pixels import to_uint8

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "models" / "diffusion_blocks_shapes.safetensors"
OUTPUT = ROOT / "models" / "diffusion_blocks_shapes.fitted.json"
CAPTION_SEED = 20260415  # training-distribution captions, not the benchmarks' held-out seed
NOISE_SEED = 1000  # start noise of caption i: seed 1000 + i (the benchmarks use seed = caption index)
SAMPLERS = ("dpmpp_2m", "uni_pc", "lms", "uni_pc_bh2 order=1")  # a name, then options as option=value
BUDGETS = (4, 6, 8, 10)


def guided_model(unet, encoder, captions, cfg):
    """The bundled model guided towards `captions` (one per batch item), as text_to_image guides it."""
    denoiser = Denoiser(unet)
    cond = Cond(torch.cat([encoder.encode(c)[0] for c in captions]))
    return denoiser, Guided(denoiser, cond, Cond(encoder.encode("")[0]), cfg)


def judged(scenes):
    """choose(finishes) for fit_schedules: most adherence checks passed by its pictures, then the closest."""
    def passes(finish):
        images = to_uint8(finish.final.clamp(-1, 1)).numpy()
        return sum(sum(results) for scene, image in zip(scenes, images) for results in score(scene, image).values())

    def choose(finishes):
        return min(range(len(finishes)), key=lambda i: (-passes(finishes[i]), finishes[i].error))

    return choose


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--captions", type=int, default=16)
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--teacher-substeps", type=int, default=4)
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated, e.g. 'lms,uni_pc_bh2 order=1'")
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    parser.add_argument("--choose", choices=("teacher", "judge"), default="judge",
                        help="the last noise level: closest to the teacher, or most adherence checks passed")
    parser.add_argument("--out", default=str(OUTPUT))
    args = parser.parse_args()
    unet, encoder = load_unet(str(BUNDLED)), load_text_encoder(str(BUNDLED))
    scenes = sample_scenes(CAPTION_SEED, args.captions, held_out=False)
    captions = [scene.caption for scene in scenes]
    denoiser, model = guided_model(unet, encoder, captions, args.cfg)
    seeds = [NOISE_SEED + i for i in range(len(captions))]
    noise = start_noise((len(captions), unet.config.in_channels, 64, 64), seeds)
    sigma_min, sigma_max = float(denoiser.schedule.sigma_min), float(denoiser.schedule.sigma_max)
    settings = {"grid_size": args.grid, "teacher_substeps": args.teacher_substeps, "cfg": args.cfg,
                "sigma_min": sigma_min, "sigma_max": sigma_max, "size": 64, "negative": "", "choose": args.choose}
    fits, started = [], time.perf_counter()
    budgets = [int(b) for b in args.budgets.split(",")]
    for label in args.samplers.split(","):
        def progress(done, total, label=label):
            if done % 25 == 0 or done == total:
                seconds = time.perf_counter() - started
                print(f"{label}: {done}/{total} DP nodes ({seconds:.0f} s)", flush=True)

        sampler, options = parse_sampler_label(label)
        fits += fit_schedules(model, noise, sigma_min, sigma_max, sampler, budgets, grid_size=args.grid,
                              teacher_substeps=args.teacher_substeps, progress=progress, sampler_options=options,
                              choose=judged(scenes) if args.choose == "judge" else closest_to_teacher)
    seconds = time.perf_counter() - started
    data = record(weights_hash(unet), BUNDLED.name, settings, fits, caption_seed=CAPTION_SEED,
                  captions=captions, noise_seeds=seeds,
                  command=f"scripts/fit_bundled_schedules.py --captions {args.captions} --grid {args.grid} "
                          f"--teacher-substeps {args.teacher_substeps} --cfg {args.cfg:g} --choose {args.choose}",
                  seconds=round(seconds))
    save(Path(args.out), data)
    for fit in fits:
        levels = ", ".join(f"{s:.3g}" for s in fit.sigmas.tolist())
        print(f"{fit.note}: {levels} (teacher RMSE {fit.error:.4f})")
    print(f"wrote {args.out} in {seconds:.0f} s")


if __name__ == "__main__":
    main()
