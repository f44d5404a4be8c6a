"""The pack's main job, headless: run the schedule-comparison workflow in ComfyUI and write its plot.

Starts ComfyUI with the pack loaded, queues example_workflows/api/schedule_comparison.json,
copies the PNG it saves to --out-dir (default: out/) and prints the path.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

from comfyui_server import PACK_ROOT, ComfyServer

WORKFLOW = PACK_ROOT / "example_workflows" / "api" / "schedule_comparison.json"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=PACK_ROOT / "out", help="where the PNG is written")
    args = parser.parse_args()
    server = ComfyServer(PACK_ROOT / ".cache" / "demo-home").start()
    try:
        history = server.run(json.loads(WORKFLOW.read_text()))
        images = server.output_images(history)
    except Exception:
        print(server.log(), file=sys.stderr)
        raise
    finally:
        server.stop()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    target = args.out_dir / "schedule_comparison.png"
    shutil.copyfile(images[0], target)
    print(target.resolve())


if __name__ == "__main__":
    main()
