"""Diffusion Blocks: diffusion taken apart into blocks (schedules, samplers, networks) for ComfyUI."""


async def comfy_entrypoint():
    """ComfyUI V3 entry point; the nodes (and torch) are imported only when ComfyUI asks."""
    from .nodes import DiffusionBlocksExtension

    return DiffusionBlocksExtension()
