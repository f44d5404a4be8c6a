"""One small U-Net built twice from one config and one set of weights: the pack's (as a native MODEL) and ComfyUI's own
UNetModel (as ComfyUI builds it for a checkpoint), both ModelPatchers that ComfyUI's patch nodes and samplers take."""
import torch

from diffusion_blocks.networks.prediction import TrainingSpec
from diffusion_blocks.networks.unet import UNetConfig, uniform_depths

ENCODER, DECODER = uniform_depths((1, 1, 1, 0))
# SD1.x's layout (four levels, attention on the first three, a middle transformer, 1x1 projections) at width 32
SD1_LIKE = UNetConfig(model_channels=32, channel_mult=(1, 2, 4, 4), num_res_blocks=(2, 2, 2, 2),
                      transformer_depth=ENCODER, transformer_depth_output=DECODER, transformer_depth_middle=1,
                      context_dim=32, num_heads=4)
# SDXL's layout (three levels, no attention on the first, deeper transformers below, linear projections, 16-channel
# heads, the vector condition of the pooled text and the size embeddings) at width 32
SDXL_LIKE = UNetConfig(model_channels=32, channel_mult=(1, 2, 4), num_res_blocks=(2, 2, 2),
                       transformer_depth=(0, 0, 1, 1, 2, 2), transformer_depth_output=(2, 2, 2, 1, 1, 1, 0, 0, 0),
                       transformer_depth_middle=1, context_dim=48, num_heads=-1, head_channels=16,
                       linear_projection=True, adm_in_channels=2816)
POOLED = 1280
CONTEXT_TOKENS = 7


def random_network(config=SD1_LIKE, seed=0):
    """The pack's U-Net with torch's default initialisation under a fixed seed, as an SD1.x v-prediction model (its
    denoised at high noise is the network's own output, so what a patch does to it shows in the sampled latent)."""
    from diffusion_blocks.networks.unet import UNet

    torch.manual_seed(seed)
    network = UNet(config).eval().requires_grad_(False)
    network.trained_as = TrainingSpec(prediction="v")
    return network


def twins(config=SD1_LIKE, seed=0):
    """(ours, ComfyUI's): MODEL wires of the same weights, our network and ComfyUI's UNetModel, one model sampling."""
    import comfy.model_base
    import comfy.model_patcher

    from diffusion_blocks.nodes.native_model import ModelConfig, comfy_unet_config
    from diffusion_blocks.nodes.unet_nodes import unet_wire

    network = random_network(config, seed)
    ours = unet_wire(network).clone()
    model_config = ModelConfig(comfy_unet_config(config))
    model_config.latent_format = ours.model.latent_format
    reference = comfy.model_base.BaseModel(model_config, device=torch.device("cpu"))
    reference.diffusion_model.load_state_dict(network.state_dict())
    reference.diffusion_model.requires_grad_(False)
    reference.model_sampling = ours.model.model_sampling
    if config.concat_channels:  # an inpainting U-Net, as ComfyUI's checkpoint loader marks it
        reference.set_inpaint()
    if config.adm_in_channels:  # the same vector condition from the same pooled text and sizes
        reference.encode_adm = ours.model.encode_adm
    cpu = torch.device("cpu")
    return ours, comfy.model_patcher.ModelPatcher(reference, load_device=cpu, offload_device=cpu)


def prompts(config=SD1_LIKE, seed=1):
    """(positive, negative) CONDITIONING of random text embeddings (and pooled text, for a vector condition)."""
    generator = torch.Generator().manual_seed(seed)
    text = [torch.randn(1, CONTEXT_TOKENS, config.context_dim, generator=generator) for _ in range(2)]
    pooled = [{"pooled_output": torch.randn(1, POOLED, generator=generator)} if config.adm_in_channels else {}
              for _ in range(2)]
    return [[text[0], pooled[0]]], [[text[1], pooled[1]]]


def sample(model, positive, negative, size=16, steps=3, cfg=4.0, seed=0, sampler="euler", scheduler="normal"):
    """A few steps of ComfyUI's own KSampler core from seeded noise; torch's global RNG reseeded (patches that draw)."""
    import comfy.sample

    noise = torch.randn(1, 4, size, size, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    with torch.no_grad():
        return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative,
                                   torch.zeros_like(noise), seed=seed, disable_pbar=True)


def relative_l2(a, b):
    return float((a - b).norm() / b.norm())
