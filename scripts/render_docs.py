"""Render the README's pictures: every example workflow through a headless ComfyUI, saved as docs/<output>.png.

Each SaveImage of a workflow gives one picture, named after its filename prefix. SD1.x workflows need a
checkpoint: pass a real one with --checkpoint; without it they run on the tests' random-weight SD1.x
checkpoint (and random SD1.5 LoRA and ControlNet, devtools/sd_adapters.py) at 128x128 pixels, and their pictures are named <output>_random_weights.png (they show that the
workflow runs, not what SD1.x draws). Pictures are re-saved without ComfyUI's metadata and shrunk under 300 KB.
The same run writes each example workflow's thumbnail, example_workflows/<name>.jpg (its first picture, which
ComfyUI's template browser shows on the workflow's card; marked "random test weights" where that is what drew it;
a workflow with ComfyUI-Distributed's nodes is drawn as a master without workers draws it, its own picture),
and the pack's icon, docs/icon.png: the bundled model's `make demo` picture at four moments of sampling, from noise
to picture, as 2x2 blocks (drawn with the pack's own pipeline, no ComfyUI).
Run: .venv/bin/python scripts/render_docs.py [--checkpoint path/to/v1-5.safetensors] [--only WHAT] [workflow ...]
"""
import argparse
import json
import re
from pathlib import Path

from PIL import Image, ImageDraw

from diffusion_blocks.devtools.paths import PACK_ROOT
from diffusion_blocks.devtools.server import ComfyServer
from diffusion_blocks.devtools.sd_adapters import install_controlnet, install_lora, write_hint_picture
from diffusion_blocks.devtools.sd_checkpoint import install_checkpoint

WORKFLOWS = PACK_ROOT / "example_workflows"
API = WORKFLOWS / "api"
DOCS = PACK_ROOT / "docs"
LIMIT = 300_000
RANDOM_SIZE = 128
THUMBNAIL_SIZE = 384  # longest side of a template card's picture, in pixels
ICON_SIZE = 256  # the registry's icon: square, at most 400 x 400
ICON_PROMPT, ICON_SEED = "a red circle left of a blue square on a white background", 0  # the `make demo` picture
# ComfyUI-Distributed's nodes, and the input each passes through on a master without workers (its own picture).
PASS_THROUGH = {"DistributedSeed": "seed", "DistributedCollector": "images"}


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


def install_random_adapters(base, workflow):
    """The tests' random SD1.5 LoRA and ControlNet under the names a workflow loads, and its pictures to load (a
    drawing with clear edges) where the server's input folder lacks them."""
    for node in workflow.values():
        inputs = node["inputs"]
        if node["class_type"] == "LoraLoaderModelOnly":
            install_lora(base, inputs["lora_name"])
        elif node["class_type"] == "ControlNetLoader":
            install_controlnet(base, inputs["control_net_name"])
        elif node["class_type"] == "LoadImage" and not (Path(base) / "input" / inputs["image"]).exists():
            write_hint_picture(Path(base) / "input" / inputs["image"], RANDOM_SIZE)


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


def save_thumbnail(source, target, note=""):
    """A workflow's picture as a template thumbnail: JPEG, longest side THUMBNAIL_SIZE, an optional note along the top."""
    picture = Image.open(source).convert("RGB")
    picture.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.LANCZOS)
    if note:
        draw = ImageDraw.Draw(picture)
        left, top, right, bottom = draw.textbbox((0, 0), note)
        draw.rectangle((0, 0, right - left + 8, bottom - top + 8), fill=(255, 255, 255))
        draw.text((4 - left, 4 - top), note, fill=(0, 0, 0))
    picture.save(target, "JPEG", quality=85, optimize=True)
    return target


def draw_icon(target, size=ICON_SIZE, steps=20, shown=(0, 11, 13, 19)):
    """The pack's icon: one picture of the bundled model at four moments of sampling (noisy sample x scaled to unit
    variance, as the network sees it), from pure noise to the picture, in 2x2 blocks with white gutters."""
    import torch

    from diffusion_blocks.networks import load_text_encoder, load_unet
    from diffusion_blocks.networks.prediction import Cond, Denoiser
    from diffusion_blocks.pipeline import generate
    from diffusion_blocks.samplers import SAMPLERS
    from diffusion_blocks.schedules import get_sigmas
    from diffusion_blocks.views.latents import channels_picture

    bundled = PACK_ROOT / "models" / "diffusion_blocks_shapes.safetensors"
    unet, encoder = load_unet(bundled), load_text_encoder(bundled)
    denoiser = Denoiser(unet)
    with torch.no_grad():
        cond, uncond = Cond(encoder.encode(ICON_PROMPT)[0]), Cond(encoder.encode("")[0])
        sigmas = get_sigmas("karras", steps, model=denoiser.schedule)
        latent = torch.zeros(1, unet.config.in_channels, 64, 64)
        out = generate(denoiser, SAMPLERS["dpmpp_2m"], sigmas, latent, ICON_SEED, cond=cond, uncond=uncond, cfg=5.0,
                       record=True)
    moments = [out.trajectory.steps[i] for i in shown[:-1]]
    pictures = [channels_picture(s["x"] / (s["sigma"] ** 2 + 1) ** 0.5) for s in moments]
    pictures.append(channels_picture(out.samples))
    gutter = size // 32
    cell = (size - 3 * gutter) // 2
    icon = Image.new("RGB", (size, size), (255, 255, 255))
    for k, picture in enumerate(pictures):
        block = Image.fromarray((picture * 255).round().astype("uint8")).resize((cell, cell), Image.NEAREST)
        icon.paste(block, (gutter + (k % 2) * (cell + gutter), gutter + (k // 2) * (cell + gutter)))
    icon.save(target, optimize=True)
    return target


def on_one_machine(workflow, offered):
    """The workflow as a master without workers runs it, where the server lacks ComfyUI-Distributed: each of the
    extension's nodes (PASS_THROUGH) replaced by the input it passes on."""
    for node_id, node in list(workflow.items()):
        if node["class_type"] in PASS_THROUGH and node["class_type"] not in offered:
            value = node["inputs"][PASS_THROUGH[node["class_type"]]]
            for other in workflow.values():
                for key, link in other["inputs"].items():
                    if link == [node_id, 0]:
                        other["inputs"][key] = value
            del workflow[node_id]
    return workflow


def render(server, name, checkpoint, only=("pictures", "thumbnails")):
    """Run one API workflow; returns the docs pictures and the thumbnail it wrote."""
    workflow = on_one_machine(json.loads((API / f"{name}.json").read_text()), server.get("/object_info"))
    needs_sd1 = checkpoint_names(workflow)
    for ckpt in needs_sd1:
        link_checkpoint(server.base, checkpoint, ckpt)
    if needs_sd1 and checkpoint is None:
        shrink_for_random_weights(workflow)
        install_random_adapters(server.base, workflow)
    suffix = "_random_weights" if needs_sd1 and checkpoint is None else ""
    written = []
    outputs = server.output_images(server.run(workflow))
    for path in outputs if "pictures" in only else []:
        output = re.sub(r"_\d{5}_$", "", path.stem)
        written.append(save_small(path, DOCS / f"{output}{suffix}.png"))
    if "thumbnails" in only and outputs and (WORKFLOWS / f"{name}.json").exists():
        note = "random test weights" if suffix else ""
        written.append(save_thumbnail(outputs[0], WORKFLOWS / f"{name}.jpg", note))
    return written


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workflows", nargs="*", help="names in example_workflows/api (default: all)")
    parser.add_argument("--checkpoint", type=Path, help="a real SD1.x checkpoint for the SD1.x workflows")
    parser.add_argument("--only", action="append", choices=("pictures", "thumbnails", "icon"),
                        help="write only these (repeatable; default: the docs pictures, the thumbnails and the icon)")
    args = parser.parse_args()
    only = tuple(args.only or ("pictures", "thumbnails", "icon"))
    names = args.workflows or sorted(p.stem for p in API.glob("*.json"))
    DOCS.mkdir(exist_ok=True)
    if "icon" in only:
        path = draw_icon(DOCS / "icon.png")
        print(f"{path.relative_to(PACK_ROOT)}  ({path.stat().st_size // 1000} KB)", flush=True)
    if not {"pictures", "thumbnails"} & set(only):
        return
    with ComfyServer(PACK_ROOT / ".cache" / "docs-home") as server:
        for name in names:
            for path in render(server, name, args.checkpoint, only):
                print(f"{path.relative_to(PACK_ROOT)}  ({path.stat().st_size // 1000} KB, from {name})", flush=True)


if __name__ == "__main__":
    main()
