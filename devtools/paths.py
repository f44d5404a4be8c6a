"""Where the pack, its cache and the provisioned ComfyUI are."""
import os
import sys
import sysconfig
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parent.parent
PACK_NAME = "diffusion_blocks"
CACHE = PACK_ROOT / ".cache"
COMFYUI_PTH = "diffusion_blocks_comfyui.pth"  # written by scripts/setup.py, the one place that decides which ComfyUI


def comfyui_link():
    """The link in .cache/ that scripts/setup.py recorded as this venv's ComfyUI: the one line of the venv's .pth."""
    pth = Path(sysconfig.get_path("purelib")) / COMFYUI_PTH
    if not pth.exists():
        raise RuntimeError(f"no ComfyUI is provisioned for the Python in {sys.prefix} (no {pth}): run `make setup` "
                           "(scripts/setup.py) first, and run this with the venv's Python")
    return Path(pth.read_text().strip())


def comfyui_path():
    """ComfyUI's folder, as scripts/setup.py found and recorded it for the running venv: $COMFYUI_PATH, the
    enclosing ComfyUI or 0.3.75 for .venv; the ComfyUI of an archive for another venv (`make test-e2e-0.33`).
    A Python the set-up never saw (a borrowed GPU machine's, benchmarks/gpu_session.sh) takes $COMFYUI_PATH as is."""
    wanted = os.environ.get("COMFYUI_PATH")
    if wanted and not (Path(sysconfig.get_path("purelib")) / COMFYUI_PTH).exists():
        return Path(wanted).resolve()
    link = comfyui_link()
    if not link.is_symlink():
        raise RuntimeError(f"ComfyUI is not provisioned ({link} is missing): run `make setup` (scripts/setup.py) first")
    root = link.resolve()
    if wanted and Path(wanted).resolve() != root:
        raise RuntimeError(f"COMFYUI_PATH={wanted} but set-up provisioned {root}: run `make setup` again")
    return root
