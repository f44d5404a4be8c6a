"""The end-to-end tier's server: scripts/comfyui_server.py, imported from the pack."""
import sys

from .paths import PACK_ROOT

sys.path.insert(0, str(PACK_ROOT / "scripts"))

from comfyui_server import ComfyServer, WorkflowError, WorkflowInterrupted  # noqa: E402,F401
