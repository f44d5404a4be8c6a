"""ComfyUI V3 nodes of Diffusion Blocks: thin schemas that call the pure-torch core."""
from comfy_api.latest import ComfyExtension

from .compare_nodes import COMPARE_NODES
from .fit_nodes import FIT_NODES
from .latent_nodes import LATENT_NODES
from .lora_nodes import LORA_NODES
from .native_clip import NATIVE_CLIP_NODES
from .native_model import NATIVE_MODEL_NODES
from .plot_nodes import PLOT_NODES
from .sample_nodes import SAMPLE_NODES
from .sampler_nodes import SAMPLER_NODES
from .schedule_nodes import SCHEDULE_NODES
from .sigma_nodes import SIGMA_NODES
from .text_nodes import TEXT_NODES
from .unet_nodes import UNET_NODES


class DiffusionBlocksExtension(ComfyExtension):
    """Registers every node of the pack with ComfyUI."""

    async def get_node_list(self):
        return [*SCHEDULE_NODES, *SIGMA_NODES, *SAMPLER_NODES, *UNET_NODES, *TEXT_NODES, *PLOT_NODES,
                *SAMPLE_NODES, *COMPARE_NODES, *NATIVE_MODEL_NODES, *LATENT_NODES, *FIT_NODES,
                *NATIVE_CLIP_NODES, *LORA_NODES]
