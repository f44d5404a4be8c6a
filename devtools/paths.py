"""Where the pack, its cache and the provisioned ComfyUI are."""
import os
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parent.parent
PACK_NAME = "diffusion_blocks"
CACHE = PACK_ROOT / ".cache"
COMFYUI_LINK = CACHE / "comfyui"  # written by scripts/setup.py, the one place that decides which ComfyUI


def comfyui_path():
    """ComfyUI's folder, as scripts/setup.py found and recorded it ($COMFYUI_PATH, the enclosing ComfyUI, or 0.3.75)."""
    if not COMFYUI_LINK.is_symlink():
        raise RuntimeError("ComfyUI is not provisioned: run `make setup` (scripts/setup.py) first")
    root = COMFYUI_LINK.resolve()
    wanted = os.environ.get("COMFYUI_PATH")
    if wanted and Path(wanted).resolve() != root:
        raise RuntimeError(f"COMFYUI_PATH={wanted} but set-up provisioned {root}: run `make setup` again")
    return root
