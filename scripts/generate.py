"""Text to image from the command line: the bundled shapes model run through a headless ComfyUI, one PNG per prompt.

Starts ComfyUI once, runs example_workflows/api/text_to_image.json for every --prompt with its inputs patched,
writes the pictures (64x64 shown 4x larger) to --out-dir as 000.png, 001.png, ... in prompt order and prints
their paths. Every prompt gets the same seed, so pictures differ only by their prompts.

    .venv/bin/python scripts/generate.py --prompt "a red circle left of a blue square on a white background" \\
        --prompt "a small green star in the top left corner on a black background" --seed 3 --steps 20 \\
        --sampler dpmpp_2m --scheduler karras --cfg 5 --out-dir out/generate
    make generate ARGS='--prompt "a yellow ring on a purple background"'

--sampler takes any name of the pack's sampler registry (DB_Sampler), --scheduler any schedule name
(DB_Schedule, on the model's own noise range); unknown names are refused before ComfyUI starts.
"""
import argparse
import json
import shutil
from pathlib import Path

from diffusion_blocks.devtools.paths import PACK_ROOT
from diffusion_blocks.devtools.server import ComfyServer
from diffusion_blocks.devtools.workflow_format import text_to_image_workflow
from diffusion_blocks.samplers import SAMPLER_SPECS
from diffusion_blocks.schedules import SCHEDULES

WORKFLOW = PACK_ROOT / "example_workflows" / "api" / "text_to_image.json"


def choice(names, what):
    """An argparse type accepting only the given names, listing them when refused."""
    def check(value):
        if value not in names:
            raise argparse.ArgumentTypeError(f"unknown {what} {value!r}; choose one of: {', '.join(names)}")
        return value
    return check


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", action="append", required=True, help="a caption to draw (repeat for more)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the start noise, the same for every prompt")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--sampler", type=choice(SAMPLER_SPECS, "sampler"), default="dpmpp_2m",
                        help="a sampler name of the pack (default dpmpp_2m)")
    parser.add_argument("--scheduler", type=choice(SCHEDULES, "scheduler"), default="karras",
                        help="a schedule name of the pack (default karras)")
    parser.add_argument("--cfg", type=float, default=5.0, help="classifier-free guidance scale")
    parser.add_argument("--out-dir", type=Path, default=PACK_ROOT / "out" / "generate", help="where the PNGs go")
    return parser.parse_args(argv)


def main():
    args = parse_args()
    base = json.loads(WORKFLOW.read_text())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with ComfyServer(PACK_ROOT / ".cache" / "generate-home") as server:
        for index, prompt in enumerate(args.prompt):
            workflow = text_to_image_workflow(base, prompt, args.seed, args.steps, args.sampler, args.scheduler, args.cfg)
            image, = server.output_images(server.run(workflow))
            target = args.out_dir / f"{index:03d}.png"
            shutil.copyfile(image, target)
            print(target.resolve(), flush=True)


if __name__ == "__main__":
    main()
