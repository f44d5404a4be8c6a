"""Our U-Net and prediction wrappers against ComfyUI 0.3.75's own (UNetModel, model_detection, model_sampling)."""
import math

import pytest
import torch
from safetensors.torch import save_file

from diffusion_blocks.networks.prediction import Denoiser, TrainingSpec
from diffusion_blocks.networks.families import FAMILIES
from diffusion_blocks.networks.unet import UNet, UNetConfig
from diffusion_blocks.networks.sdxl_conditioning import sdxl_vector
from diffusion_blocks.networks.unet.detect import detect_unet
from diffusion_blocks.networks.unet_loading import load_unet

PREFIX = "model.diffusion_model."
TOLERANCE = 1e-4  # relative, fp32


def comfy_kwargs(config):
    """ComfyUI UNetModel's arguments for one of our configs (it lists decoder depths deepest-last)."""
    c = config
    return dict(image_size=32, in_channels=c.in_channels, out_channels=c.out_channels, model_channels=c.model_channels,
                num_res_blocks=list(c.num_res_blocks), channel_mult=list(c.channel_mult), num_heads=c.num_heads,
                num_head_channels=c.head_channels, use_spatial_transformer=True, context_dim=c.context_dim,
                legacy=False, use_linear_in_transformer=c.linear_projection,
                adm_in_channels=c.adm_in_channels or None, num_classes="sequential" if c.adm_in_channels else None,
                transformer_depth=list(c.transformer_depth), transformer_depth_middle=c.transformer_depth_middle,
                transformer_depth_output=list(reversed(c.transformer_depth_output)))


def reduced(family, model_channels=32, pooled=64):
    """A published family's exact layout of levels, depths, projections and conditioning at a reduced width."""
    preset = FAMILIES[family].unet
    heads = dict(num_heads=preset.num_heads, head_channels=-1) if preset.num_heads > 0 else dict(num_heads=-1, head_channels=16)
    return UNetConfig(**{**preset.to_dict(), **heads, "model_channels": model_channels, "context_dim": 48,
                         "adm_in_channels": pooled + (preset.adm_in_channels - 1280) if preset.adm_in_channels else 0})


# The published architectures as ComfyUI 0.3.75 builds them (its supported_models / model_detection configs).
REAL = {
    "sd1": dict(model_channels=320, channel_mult=[1, 2, 4, 4], num_res_blocks=[2] * 4, transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], transformer_depth_middle=1, context_dim=768,
                num_heads=8, num_head_channels=-1, use_linear_in_transformer=False, adm_in_channels=None),
    "sd2": dict(model_channels=320, channel_mult=[1, 2, 4, 4], num_res_blocks=[2] * 4, transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], transformer_depth_middle=1, context_dim=1024,
                num_heads=-1, num_head_channels=64, use_linear_in_transformer=True, adm_in_channels=None),
    "sdxl": dict(model_channels=320, channel_mult=[1, 2, 4], num_res_blocks=[2] * 3, transformer_depth=[0, 0, 2, 2, 10, 10],
                 transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], transformer_depth_middle=10, context_dim=2048,
                 num_heads=-1, num_head_channels=64, use_linear_in_transformer=True, adm_in_channels=2816, num_classes="sequential"),
    "sdxl_refiner": dict(model_channels=384, channel_mult=[1, 2, 4, 4], num_res_blocks=[2] * 4,
                         transformer_depth=[0, 0, 4, 4, 4, 4, 0, 0], transformer_depth_output=[0, 0, 0, 4, 4, 4, 4, 4, 4, 0, 0, 0],
                         transformer_depth_middle=4, context_dim=1280, num_heads=-1, num_head_channels=64,
                         use_linear_in_transformer=True, adm_in_channels=2560, num_classes="sequential"),
    # SDXL distilled: no middle transformer (ComfyUI's -1: residual blocks only).
    "ssd1b": dict(model_channels=320, channel_mult=[1, 2, 4], num_res_blocks=[2] * 3, transformer_depth=[0, 0, 2, 2, 4, 4],
                  transformer_depth_output=[0, 0, 0, 1, 1, 2, 10, 4, 4], transformer_depth_middle=-1, context_dim=2048,
                  num_heads=-1, num_head_channels=64, use_linear_in_transformer=True, adm_in_channels=2816,
                  num_classes="sequential"),
}
COMFY_NAMES = {"sd1": "SD15", "sd2": "SD20", "sdxl": "SDXL", "sdxl_refiner": "SDXLRefiner", "ssd1b": "SSD1B"}


def randomize(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if p.ndim == 1:  # norm scales around 1, biases around 0
                p.copy_(float("norm" in name and name.endswith("weight")) + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
    return module


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl", "sdxl_refiner", "ssd1b"])
def test_matches_comfyui_unet_from_the_same_single_file(comfy, family, tmp_path):
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    import comfy.utils

    config = reduced(family)
    reference = randomize(UNetModel(**comfy_kwargs(config)), seed=3).eval()
    path = tmp_path / "checkpoint.safetensors"
    save_file({PREFIX + k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    ours = load_unet(path, config=config)
    # ComfyUI reads the same file through its own loader.
    reference.load_state_dict(comfy.utils.state_dict_prefix_replace(comfy.utils.load_torch_file(str(path)), {PREFIX: ""}))

    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 16, 16, generator=g)
    t = torch.tensor([1.5, 981.0])
    context = torch.randn(2, 11, config.context_dim, generator=g)
    y = None
    if config.adm_in_channels:
        y = sdxl_vector(torch.randn(2, 64, generator=g), 1024, 1024) if family == "sdxl" else torch.randn(2, config.adm_in_channels, generator=g)
    with torch.no_grad():
        expected = reference(x, t, context=context, y=y)
        result = ours(x, t, context, y)
    assert ((result - expected).abs().max() / expected.abs().max()).item() <= TOLERANCE


@pytest.mark.parametrize("family", sorted(REAL))
def test_real_architectures_are_detected_from_shapes(comfy, family):
    """The exact shapes of SD1.5, SD2.1-768-v, SDXL base and refiner and SSD-1B, built by ComfyUI on the meta device."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    import comfy.model_detection

    with torch.device("meta"):
        reference = UNetModel(image_size=32, in_channels=4, out_channels=4, use_spatial_transformer=True, legacy=False,
                              **REAL[family])
    state = {PREFIX + k: v for k, v in reference.state_dict().items()}
    assert type(comfy.model_detection.model_config_from_unet(state, PREFIX)).__name__ == COMFY_NAMES[family]
    detected = detect_unet(state)
    assert (detected.family, detected.layout, detected.prefix) == (family, "ldm", PREFIX)
    assert detected.config == FAMILIES[family].unet
    with torch.device("meta"):
        ours = UNet(detected.config).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in reference.state_dict().items()}
    ours = {PREFIX + k: v for k, v in ours.items()}  # and ComfyUI names our family record's network the same
    assert type(comfy.model_detection.model_config_from_unet(ours, PREFIX)).__name__ == COMFY_NAMES[family]


@pytest.mark.parametrize("prediction, comfy_type", [("eps", "EPS"), ("v", "V_PREDICTION")])
def test_denoiser_matches_comfyui_model_sampling(comfy, prediction, comfy_type):
    import comfy.model_sampling as ms

    class Sampling(ms.ModelSamplingDiscrete, getattr(ms, comfy_type)):
        pass

    sampling = Sampling()  # SD's scaled-linear betas, 1000 steps
    g = torch.Generator().manual_seed(5)
    x, sigma = torch.randn(3, 4, 6, 6, generator=g) * 3, torch.tensor([0.05, 1.3, 14.0])
    output = torch.randn(3, 4, 6, 6, generator=g)
    seen = {}

    def network(x_in, t, context=None, y=None):
        seen["x_in"], seen["t"] = x_in, t
        return output

    denoised = Denoiser(network, TrainingSpec(prediction=prediction), quantize=True)(x, sigma)
    assert torch.allclose(seen["x_in"], sampling.calculate_input(sigma, x), atol=1e-6)
    assert torch.equal(seen["t"], sampling.timestep(sigma).float())  # ComfyUI rounds to the nearest training step
    assert torch.allclose(denoised, sampling.calculate_denoised(sigma, output, x), atol=1e-5)
    Denoiser(network, TrainingSpec(prediction=prediction))(x, sigma)
    assert torch.allclose(seen["t"], sampling.timestep(sigma).float(), atol=0.5)  # continuous by default


def test_guidance_rescale_matches_comfyui_rescale_cfg(comfy, native_model, sd1_sampling):
    from comfy_extras.nodes_model_advanced import RescaleCFG

    patched = RescaleCFG().patch(native_model(sd1_sampling), 0.7)[0]
    rescale = patched.model_options["sampler_cfg_function"]
    g = torch.Generator().manual_seed(6)
    x, sigma = torch.randn(2, 4, 8, 8, generator=g) * 4, torch.tensor([4.0, 0.6])
    d_pos, d_neg = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)

    def network(x_in, t, context=None, y=None):  # an x0 network whose answer depends only on the conditioning
        assert x_in.shape[0] == 4  # cond and uncond in one call
        return torch.where(context[:, :1, :1, None] > 0, d_pos.repeat(2, 1, 1, 1), d_neg.repeat(2, 1, 1, 1))

    cond, uncond = torch.ones(1, 1, 1), -torch.ones(1, 1, 1)
    result = Denoiser(network, TrainingSpec(prediction="x0"))(x, sigma, cond, uncond, cfg=5.0, cfg_rescale=0.7)
    # ComfyUI's cfg functions take and give "noise" x - denoised.
    expected = x - rescale({"cond": x - d_pos, "uncond": x - d_neg, "cond_scale": 5.0, "sigma": sigma, "input": x})
    assert torch.allclose(result, expected, atol=1e-4)


def test_refiner_vector_matches_comfyui_size_embedding(comfy):
    """ComfyUI's SDXLRefiner.encode_adm: pooled text, then Timestep(256) of height, width, crop_h, crop_w, score."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import Timestep

    from diffusion_blocks.networks.sdxl_conditioning import refiner_vector

    pooled = torch.randn(2, 1280, generator=torch.Generator().manual_seed(8))
    embed = Timestep(256)
    parts = [embed(torch.Tensor([value])) for value in (896, 1152, 16, 0, 2.5)]
    expected = torch.cat([pooled, torch.flatten(torch.cat(parts)).unsqueeze(0).repeat(2, 1)], dim=1)
    assert torch.allclose(refiner_vector(pooled, width=1152, height=896, crop_h=16, aesthetic_score=2.5), expected, atol=1e-6)
