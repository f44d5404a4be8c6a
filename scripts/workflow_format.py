"""Convert workflows between ComfyUI's API format (what /prompt runs) and its UI format (what the canvas saves).

`python scripts/workflow_format.py API.json UI.json` writes the UI twin of an API workflow, laid out in
columns by depth; it starts a headless ComfyUI to read /object_info (the widget order of every node).
"""
import argparse
import json
import tempfile
from pathlib import Path

from diffusion_blocks.devtools.server import ComfyServer
from diffusion_blocks.devtools.workflow_format import api_to_ui


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("api_json", type=Path)
    parser.add_argument("ui_json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home, ComfyServer(home) as server:
        object_info = server.get("/object_info")
    ui = api_to_ui(json.loads(args.api_json.read_text()), object_info)
    args.ui_json.write_text(json.dumps(ui, indent=1) + "\n")
    print(args.ui_json)


if __name__ == "__main__":
    main()
