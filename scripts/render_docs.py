"""Render the README's pictures: every example workflow through a headless ComfyUI, saved as docs/<output>.png.

Each SaveImage of a workflow gives one picture, named after its filename prefix. SD1.x workflows need a
checkpoint: pass a real one with --checkpoint; without it they run on the tests' random-weight SD1.x
checkpoint at 128x128 pixels, and their pictures are named <output>_random_weights.png (they show that the
workflow runs, not what SD1.x draws). Pictures are re-saved without ComfyUI's metadata and shrunk under 300 KB.
Run: .venv/bin/python scripts/render_docs.py [--checkpoint path/to/v1-5.safetensors] [workflow ...]
"""
import argparse
import json
import re
from pathlib import Path

from PIL import Image

from diffusion_blocks.devtools.paths import PACK_ROOT
from diffusion_blocks.devtools.server import ComfyServer
from diffusion_blocks.devtools.sd_checkpoint import install_checkpoint

API = PACK_ROOT / "example_workflows" / "api"
DOCS = PACK_ROOT / "docs"
LIMIT = 300_000
RANDOM_SIZE = 128


def checkpoint_names(workflow):
    """The checkpoint file names a workflow loads."""
    return {n["inputs"]["ckpt_name"] for n in workflow.values() if n["class_type"] == "CheckpointLoaderSimple"}


def link_checkpoint(base, checkpoint, name):
    """Make `checkpoint` (a real file, or None: the random one) available as models/checkpoints/<name>."""
    if checkpoint is None:
        return install_checkpoint(base, name)
    link = Path(base) / "models" / "checkpoints" / name
    link.unlink(missing_ok=True)
    link.symlink_to(Path(checkpoint).resolve())
    return name


def shrink_for_random_weights(workflow):
    """SD1.x latents of RANDOM_SIZE pixels: random weights draw noise at any size, so draw it quickly."""
    for node in workflow.values():
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=RANDOM_SIZE, height=RANDOM_SIZE)


def save_small(source, target, limit=LIMIT):
    """Copy a PNG without its metadata, halving its size until the file is under `limit` bytes."""
    picture = Image.open(source).convert("RGB")
    while True:
        picture.save(target, optimize=True)
        if target.stat().st_size < limit:
            return target
        picture = picture.resize((picture.width // 2, picture.height // 2), Image.LANCZOS)


def render(server, name, checkpoint):
    """Run one API workflow; returns the docs pictures it wrote."""
    workflow = json.loads((API / f"{name}.json").read_text())
    needs_sd1 = checkpoint_names(workflow)
    for ckpt in needs_sd1:
        link_checkpoint(server.base, checkpoint, ckpt)
    if needs_sd1 and checkpoint is None:
        shrink_for_random_weights(workflow)
    suffix = "_random_weights" if needs_sd1 and checkpoint is None else ""
    written = []
    for path in server.output_images(server.run(workflow)):
        output = re.sub(r"_\d{5}_$", "", path.stem)
        written.append(save_small(path, DOCS / f"{output}{suffix}.png"))
    return written


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workflows", nargs="*", help="names in example_workflows/api (default: all)")
    parser.add_argument("--checkpoint", type=Path, help="a real SD1.x checkpoint for the SD1.x workflows")
    args = parser.parse_args()
    names = args.workflows or sorted(p.stem for p in API.glob("*.json"))
    DOCS.mkdir(exist_ok=True)
    with ComfyServer(PACK_ROOT / ".cache" / "docs-home") as server:
        for name in names:
            for path in render(server, name, args.checkpoint):
                print(f"{path.relative_to(PACK_ROOT)}  ({path.stat().st_size // 1000} KB, from {name})", flush=True)


if __name__ == "__main__":
    main()
