"""ComfyUI imported in-process, CPU forced, for the node tier and the reference comparisons."""
import sys

from .paths import comfyui_path


def import_comfyui():
    """Import ComfyUI's core with `--cpu` in force; idempotent. Returns ComfyUI's folder."""
    root = comfyui_path()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from comfy.cli_args import args

    if "comfy.model_management" not in sys.modules:
        args.cpu = True
    import comfy.model_management  # noqa: F401  (must come after args.cpu)

    return root
