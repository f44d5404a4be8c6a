"""Where the pack and the provisioned ComfyUI are, and how the pack is imported by name."""
import os
import sys
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[2]
PACK_NAME = "diffusion_blocks"
CACHE = PACK_ROOT / ".cache"
IMPORT_ROOT = CACHE / "import_root"


def make_pack_importable():
    """Put the pack on sys.path as `diffusion_blocks`, whatever its folder is called."""
    link = IMPORT_ROOT / PACK_NAME
    if link.is_symlink() and link.resolve() != PACK_ROOT:
        link.unlink()  # left by a checkout that has moved
    if not link.exists():
        IMPORT_ROOT.mkdir(parents=True, exist_ok=True)
        link.symlink_to(PACK_ROOT, target_is_directory=True)
    if str(IMPORT_ROOT) not in sys.path:
        sys.path.insert(0, str(IMPORT_ROOT))
    return IMPORT_ROOT


def comfyui_path():
    """ComfyUI's folder: $COMFYUI_PATH, else the one scripts/setup.py provisioned."""
    if os.environ.get("COMFYUI_PATH"):
        return Path(os.environ["COMFYUI_PATH"]).resolve()
    recorded = CACHE / "comfyui_path"
    if not recorded.exists():
        raise RuntimeError("ComfyUI is not provisioned: run `make setup` (scripts/setup.py) first")
    return Path(recorded.read_text().strip())
