"""Test set-up shared by all tiers: ComfyUI in-process and as a server, on demand.

The pack is installed in .venv as `diffusion_blocks` (scripts/setup.py); pytest.ini puts tests/ (for
`harness`) and the provisioned ComfyUI on the path.
"""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module (restored after): for small tensors a second thread only adds synchronisation
    on a busy small machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def comfy():
    """ComfyUI imported in this process with the CPU forced; returns ComfyUI's folder."""
    from diffusion_blocks.devtools.comfy_host import import_comfyui

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
    from diffusion_blocks.devtools.server import ComfyServer

    server = ComfyServer(tmp_path_factory.mktemp("comfy_server"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
