"""Start the ComfyUI user interface on 127.0.0.1 with this pack loaded (Ctrl+C stops it).

When the pack sits in a ComfyUI's custom_nodes/ folder, that ComfyUI is started as it is.
Otherwise the provisioned ComfyUI runs with its own home in .cache/comfyui-home/, where
models go into models/checkpoints, models/diffusion_models, models/text_encoders, ...
"""
import argparse
import subprocess
import sys

from diffusion_blocks.devtools.paths import PACK_ROOT, comfyui_path
from diffusion_blocks.devtools.server import ComfyServer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8188)
    args = parser.parse_args()
    root = comfyui_path()
    if PACK_ROOT.parent == root / "custom_nodes":
        command = [sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(args.port)]
    else:
        server = ComfyServer(PACK_ROOT / ".cache" / "comfyui-home", port=args.port)
        command = server.command(headless=False) + ["--disable-auto-launch"]
        print(f"ComfyUI home (put models here): {server.base}")
    print(f"Open http://127.0.0.1:{args.port} in a browser")
    try:
        subprocess.run(command, cwd=root, check=False)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
