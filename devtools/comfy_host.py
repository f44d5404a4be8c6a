"""ComfyUI imported in this process with the CPU forced, for the node tier, reference comparisons and benchmarks."""
import importlib.util
import sys
from pathlib import Path

from .paths import comfyui_path


def import_comfyui(cpu=True):
    """Import ComfyUI's core (`--cpu` in force unless cpu=False); idempotent. Returns ComfyUI's folder.

    ComfyUI is on the venv's import path through the .pth file scripts/setup.py writes (and, under pytest,
    ahead of the working directory through pytest.ini's `pythonpath`); this checks that the `comfy` and
    `nodes` found there are the provisioned ComfyUI's, not a stale install or the pack's own nodes/ folder.
    """
    root = comfyui_path()
    for name in ("comfy", "nodes"):
        spec = importlib.util.find_spec(name) if name not in sys.modules else sys.modules[name].__spec__
        where = spec and Path(spec.origin or next(iter(spec.submodule_search_locations))).resolve()
        if where is None or root not in where.parents:
            raise RuntimeError(f"`import {name}` finds {where}, not the provisioned ComfyUI {root}: run `make setup`; "
                               "run Python outside the pack's folder (its nodes/ hides ComfyUI's nodes.py there)")
    from comfy.cli_args import args

    if "comfy.model_management" not in sys.modules:
        args.cpu = cpu
    import comfy.model_management  # noqa: F401  (must come after args.cpu)

    return root


def sd1_model_sampling():
    """ComfyUI's own SD1.x model sampling (discrete, eps prediction): sigma is the EDM sigma."""
    import_comfyui()
    import comfy.model_sampling as ms

    class SD1Sampling(ms.ModelSamplingDiscrete, ms.EPS):
        pass

    return SD1Sampling()
