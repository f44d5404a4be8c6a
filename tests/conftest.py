"""Test set-up shared by all tiers: the pack importable as `diffusion_blocks`, ComfyUI on demand."""
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

from harness import paths  # noqa: E402

paths.make_pack_importable()


@pytest.fixture(scope="session")
def comfy():
    """ComfyUI imported in this process with the CPU forced; returns ComfyUI's folder."""
    from harness.comfy_host import import_comfyui

    return import_comfyui()


@pytest.fixture(scope="session")
def pack_nodes(comfy):
    """Node id -> node class, exactly as ComfyUI's loader gets them from comfy_entrypoint()."""
    import asyncio

    import diffusion_blocks

    extension = asyncio.run(diffusion_blocks.comfy_entrypoint())
    classes = asyncio.run(extension.get_node_list())
    return {cls.GET_SCHEMA().node_id: cls for cls in classes}


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """A real ComfyUI server with the pack in custom_nodes/, shared by the end-to-end tests."""
    from harness.server import ComfyServer

    server = ComfyServer(tmp_path_factory.mktemp("comfy_server"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
