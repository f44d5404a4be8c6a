"""Small ControlNet, T2I-Adapter and control-LoRA models of ComfyUI's own classes, random weights, for a twins'
config (harness.unet_twins)."""
import torch

from harness.unet_twins import SD1_LIKE


def randomised(module, seed, scale=0.05):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=generator))
    return module.eval().requires_grad_(False)


def small_controlnet(config=SD1_LIKE):
    """ComfyUI's own ControlNet network (original layout) for a twins' config, random weights."""
    import comfy.cldm.cldm
    import comfy.controlnet

    from diffusion_blocks.nodes.native_model import comfy_unet_config

    unet_config = {k: v for k, v in comfy_unet_config(config).items()
                   if k not in ("out_channels", "transformer_depth_output")}
    network = randomised(comfy.cldm.cldm.ControlNet(hint_channels=3, **unet_config), seed=5)
    return comfy.controlnet.ControlNet(network, load_device=torch.device("cpu"))


def small_t2i_adapter(config=SD1_LIKE):
    import comfy.controlnet
    import comfy.t2i_adapter.adapter

    channels = [config.model_channels * m for m in config.channel_mult]
    network = randomised(comfy.t2i_adapter.adapter.Adapter(channels=channels, nums_rb=1, cin=3 * 64, ksize=1, sk=True,
                                                           use_conv=False, xl=False), seed=6, scale=0.1)
    return comfy.controlnet.T2IAdapter(network, channels_in=3, compression_ratio=8, upscale_algorithm="nearest-exact")


def small_control_lora(config):
    """A control-LoRA as Stability's: the hint encoder and zero convolutions of its own, every other layer taken from
    the model it is applied to (by name, from its state dict and unet_config)."""
    import comfy.controlnet

    own = {k: v for k, v in small_controlnet(config).control_model.state_dict().items()
           if k.startswith(("input_hint_block.", "zero_convs.", "middle_block_out."))}
    return comfy.controlnet.ControlLora({**own, "lora_controlnet": torch.tensor([])})
