"""Prompt adherence of the bundled model on held-out captions, judged by a deterministic image analyser.

Captions whose combination (colour, shape, background; or colour, shape, relation, colour, shape) was never
trained on are drawn from a fixed seed, generated at the issue's setting (20 steps of dpmpp_2m with the
karras schedule, cfg 5, seed = caption index) and scored by training/analyse.py: background colour, each
shape's colour and class, the position words (when given) and the two-object relations. The analyser
itself scores the rendered ground truth of the same captions first, as a check of the judge.
Prints a table; writes benchmarks/results/adherence.md and a sample grid (adherence.png).
Run: .venv/bin/python benchmarks/adherence.py [--count 240] [--model path]
"""
import argparse
import time
from collections import defaultdict
from pathlib import Path

import torch

from diffusion_blocks.networks import load_text_encoder, load_unet
from diffusion_blocks.pipeline import text_to_image
from diffusion_blocks.training.analyse import score
from diffusion_blocks.training.render import pack, render
from diffusion_blocks.training.scenes import sample_scenes
from diffusion_blocks.views.pixels import to_uint8

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BUNDLED = ROOT / "models" / "diffusion_blocks_shapes.safetensors"
EVALUATION_SEED = 20261126
TARGETS = {"colour": 0.90, "background": 0.90, "shape": 0.80, "relation": 0.60}
CHECKS = ("colour", "background", "shape", "position", "relation")


def tally(scenes, images):
    """{check: (passed, total)} over all images."""
    counts = defaultdict(lambda: [0, 0])
    for scene, image in zip(scenes, images):
        for check, results in score(scene, image).items():
            counts[check][0] += sum(results)
            counts[check][1] += len(results)
    return {check: tuple(counts[check]) for check in CHECKS if check in counts}


def evaluate(unet, encoder, count=240, steps=20, sampler="dpmpp_2m", scheduler="karras", cfg=5.0, batch=16,
             device="cpu"):
    """(scenes, generated uint8 images, {check: (passed, total)}) on `count` held-out captions."""
    scenes = sample_scenes(EVALUATION_SEED, count, held_out=True)
    images = torch.cat([text_to_image(unet, encoder, [s.caption for s in scenes[i:i + batch]],
                                      range(i, min(i + batch, count)), steps, sampler, scheduler, cfg, device=device)
                        for i in range(0, count, batch)]).numpy()
    return scenes, images, tally(scenes, images)


def table(generated, truth):
    lines = ["| check | generated | target | analyser on ground truth |", "|---|---|---|---|"]
    for check, (passed, total) in generated.items():
        target = f">= {TARGETS[check]:.0%}" if check in TARGETS else "-"
        t_passed, t_total = truth[check]
        lines.append(f"| {check} | {passed / total:.1%} ({passed}/{total}) | {target} | {t_passed / t_total:.1%} |")
    return "\n".join(lines)


def grid(images, columns=16):
    """The first images side by side, enlarged 2x, as a PIL image."""
    from PIL import Image

    rows = len(images) // columns
    tiles = images[: rows * columns].reshape(rows, columns, *images.shape[1:])
    picture = tiles.transpose(0, 2, 1, 3, 4).reshape(rows * images.shape[1], columns * images.shape[2], 3)
    return Image.fromarray(picture).resize((picture.shape[1] * 2, picture.shape[0] * 2), Image.NEAREST)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(BUNDLED))
    parser.add_argument("--count", type=int, default=240)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args()
    unet, encoder = load_unet(args.model, device=args.device), load_text_encoder(args.model)
    started = time.perf_counter()
    scenes, images, generated = evaluate(unet, encoder, args.count, batch=args.batch, device=args.device)
    seconds = time.perf_counter() - started
    truth = tally(scenes, to_uint8(render(pack(scenes))).numpy())
    report = (f"Prompt adherence, {args.count} held-out captions, 20 steps dpmpp_2m + karras, cfg 5 "
              f"({Path(args.model).name}, {args.device}, {seconds:.0f} s)\n\n{table(generated, truth)}\n")
    print(report)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "adherence.md").write_text(report)
    grid(images[:64]).save(results / "adherence.png")
    (results / "adherence_captions.txt").write_text("\n".join(s.caption for s in scenes[:64]) + "\n")
    failed = [check for check, goal in TARGETS.items() if generated[check][0] / generated[check][1] < goal]
    print("all targets met" if not failed else f"below target: {', '.join(failed)}")


if __name__ == "__main__":
    main()
