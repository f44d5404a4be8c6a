"""The pack's main job, headless: text to image with the bundled shapes model in ComfyUI.

Starts ComfyUI with the pack loaded, queues example_workflows/api/text_to_image.json (its default prompt
"a red circle left of a blue square on a white background", 20 steps of dpmpp_2m on the Karras schedule,
cfg 5, seed 0), copies the 64x64 picture it saves (shown 4x larger, 256x256) to --out-dir (default: out/)
as text_to_image.png and prints the path.
"""
import argparse
import json
import shutil
from pathlib import Path

from diffusion_blocks.devtools.paths import PACK_ROOT
from diffusion_blocks.devtools.server import ComfyServer

WORKFLOW = PACK_ROOT / "example_workflows" / "api" / "text_to_image.json"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=PACK_ROOT / "out", help="where the PNG is written")
    args = parser.parse_args()
    with ComfyServer(PACK_ROOT / ".cache" / "demo-home") as server:
        images = server.output_images(server.run(json.loads(WORKFLOW.read_text())))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    target = args.out_dir / "text_to_image.png"
    shutil.copyfile(images[0], target)
    print(target.resolve())


if __name__ == "__main__":
    main()
