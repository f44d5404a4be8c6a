"""The U-Net against diffusers' UNet2DConditionModel on identical random weights, and the published presets' sizes."""
import math

import pytest
import torch

from diffusion_blocks.devtools.compare import relative_error
from diffusion_blocks.networks.families import FAMILIES
from diffusion_blocks.networks.unet import UNet, UNetConfig
from diffusion_blocks.networks.sdxl_conditioning import FEATURES as SIZE_EMBED_DIM, sdxl_vector
from diffusion_blocks.networks.unet.fast import fast_unet
from diffusion_blocks.networks.unet_loading import load_unet

diffusers = pytest.importorskip("diffusers")

# Published parameter counts of the U-Nets (diffusers' UNet2DConditionModel of the released checkpoints).
PUBLISHED_PARAMETERS = {"sd1": 859_520_964, "sd2": 865_910_724, "sdxl": 2_567_463_684}
TOLERANCE = 1e-4  # relative, fp32

# Reduced-width diffusers configurations with each family's layout of attention, projections and conditioning.
POOLED = 32
SMALL_DIFFUSERS = {
    "sd1": dict(block_out_channels=(32, 64, 64), down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=48,
                attention_head_dim=8),
    "sd2": dict(block_out_channels=(32, 64, 64), down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=40,
                attention_head_dim=[2, 4, 4], use_linear_projection=True),
    "sdxl": dict(block_out_channels=(32, 64, 96), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=64,
                 attention_head_dim=[2, 4, 6], transformer_layers_per_block=[1, 2, 3], use_linear_projection=True,
                 addition_embed_type="text_time", addition_time_embed_dim=SIZE_EMBED_DIM,
                 projection_class_embeddings_input_dim=POOLED + 6 * SIZE_EMBED_DIM),
}


def randomize(module, seed):
    """Deterministic random weights of a sensible scale for every parameter (no zero-initialised layers)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if p.ndim == 1:  # norm scales around 1, biases around 0
                p.copy_(float("norm" in name and name.endswith("weight")) + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
    return module


@pytest.fixture(scope="module", params=sorted(SMALL_DIFFUSERS))
def diffusers_pair(request, tmp_path_factory):
    """(family, diffusers model, our U-Net loaded from its diffusers-format save)."""
    model = randomize(diffusers.UNet2DConditionModel(sample_size=8, **SMALL_DIFFUSERS[request.param]), seed=1).eval()
    folder = tmp_path_factory.mktemp(f"diffusers_{request.param}")
    model.save_pretrained(folder)
    return request.param, model, load_unet(folder)


def test_matches_diffusers_on_identical_weights(diffusers_pair):
    family, reference, ours = diffusers_pair
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 16, 12, generator=g)
    t = torch.tensor([3.0, 742.5])
    context = torch.randn(2, 9, reference.config.cross_attention_dim, generator=g)
    extra, y = {}, None
    if family == "sdxl":  # the vector condition: pooled text + (size, crop, target) embeddings, built two ways
        pooled = torch.randn(2, POOLED, generator=g)
        extra = {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": torch.tensor([[1024.0, 768, 0, 16, 1024, 768]] * 2)}}
        y = sdxl_vector(pooled, width=768, height=1024, crop_w=16)
    with torch.no_grad():
        expected = reference(x, t, encoder_hidden_states=context, **extra).sample
        result = ours(x, t, context, y)
    assert result.shape == expected.shape
    assert relative_error(result, expected) <= TOLERANCE


def test_diffusers_folder_keeps_its_structure(diffusers_pair):
    family, reference, ours = diffusers_pair
    ours_count = sum(p.numel() for p in ours.parameters())
    assert ours_count == sum(p.numel() for p in reference.parameters())
    assert ours.family == "custom" and ours.config.context_dim == reference.config.cross_attention_dim


@pytest.mark.parametrize("family", sorted(PUBLISHED_PARAMETERS))
def test_presets_have_the_published_sizes(family):
    with torch.device("meta"):
        unet = UNet(FAMILIES[family].unet)
    assert sum(p.numel() for p in unet.parameters()) == PUBLISHED_PARAMETERS[family]


def test_small_preset_fits_the_bundled_weight_budget():
    with torch.device("meta"):
        unet = UNet(FAMILIES["small"].unet)
    # fp16 bytes: at most three quarters of the 20 MB file the pack ships, leaving room for the text encoder.
    assert sum(p.numel() for p in unet.parameters()) * 2 <= 15e6


def test_odd_sizes_and_batch_broadcast_of_a_scalar_timestep():
    torch.manual_seed(0)
    unet = UNet(UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1), transformer_depth=(0, 1),
                           transformer_depth_output=(1, 1, 0, 0), context_dim=8, num_heads=2)).eval()
    x, context = torch.randn(3, 4, 7, 5), torch.randn(3, 2, 8)
    with torch.no_grad():
        out = unet(x, 10.0, context)
        assert out.shape == x.shape
        assert torch.allclose(out, unet(x, torch.full((3,), 10.0), context))


def test_channels_last_fast_path_gives_the_same_result():
    torch.manual_seed(0)
    unet = UNet(UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1), transformer_depth=(0, 1),
                           transformer_depth_output=(1, 1, 0, 0), context_dim=8, num_heads=2)).eval()
    x, context = torch.randn(2, 4, 8, 8), torch.randn(2, 3, 8)
    with torch.no_grad():
        expected = unet(x, 5.0, context)
        fast = fast_unet(unet, compile=False)  # compiling takes a minute on 2 cores: the benchmark covers it
        assert fast.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)
        result = fast(x, 5.0, context)
    assert relative_error(result, expected) <= 1e-5


@pytest.mark.parametrize("fields, message", [
    (dict(num_res_blocks=(2, 2)), "one count per level"),
    (dict(transformer_depth=(1,)), "one depth per encoder"),
    (dict(num_heads=8, head_channels=64), "exactly one of num_heads or head_channels"),
    (dict(model_channels=48), "norm groups"),
    (dict(context_dim=0), "context_dim"),
])
def test_config_errors_say_what_is_wrong(fields, message):
    with pytest.raises(ValueError, match=message):
        UNetConfig(**fields)


def test_config_round_trips_through_json():
    import json

    config = FAMILIES["sdxl"].unet
    assert UNetConfig.from_dict(json.loads(config.to_json())) == config


def test_inputs_are_checked_before_the_network_runs():
    torch.manual_seed(0)
    unet = UNet(UNetConfig(model_channels=32, channel_mult=(1,), num_res_blocks=(1,), transformer_depth=(1,),
                           transformer_depth_output=(1, 1), context_dim=8, num_heads=1, adm_in_channels=6)).eval()
    x = torch.randn(2, 4, 4, 4)
    with pytest.raises(ValueError, match=r"context must be the text embedding \(2, T, 8\)"):
        unet(x, 1.0, None, torch.zeros(2, 6))
    with pytest.raises(ValueError, match=r"y must be the vector condition \(2, 6\)"):
        unet(x, 1.0, torch.zeros(2, 3, 8))
    with pytest.raises(ValueError, match=r"must be \(B, 4, H, W\)"):
        unet(torch.zeros(2, 3, 4, 4), 1.0, torch.zeros(2, 3, 8), torch.zeros(2, 6))
    with pytest.raises(ValueError, match="3 timesteps for a batch of 2"):
        unet(x, torch.zeros(3), torch.zeros(2, 3, 8), torch.zeros(2, 6))


# The released U-Nets' diffusers configurations (their unet/config.json, the fields that differ from the defaults).
RELEASED_DIFFUSERS = {
    "sd1": dict(cross_attention_dim=768),
    "sd2": dict(cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True),
    "sdxl": dict(block_out_channels=(320, 640, 1280), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=2048,
                 attention_head_dim=[5, 10, 20], transformer_layers_per_block=[1, 2, 10], use_linear_projection=True,
                 addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816),
    "sdxl_refiner": dict(block_out_channels=(384, 768, 1536, 1536), cross_attention_dim=1280, attention_head_dim=[6, 12, 24, 24],
                         down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                         transformer_layers_per_block=4, use_linear_projection=True, addition_embed_type="text_time",
                         addition_time_embed_dim=256, projection_class_embeddings_input_dim=2560),
}


@pytest.mark.parametrize("family", sorted(RELEASED_DIFFUSERS))
def test_released_architectures_in_diffusers_layout_are_detected(family):
    """Exact shapes of SD1.5, SD2.1-768-v, SDXL base and refiner as diffusers builds them, on the meta device."""
    from diffusion_blocks.networks.unet.detect import detect_unet, diffusers_key_map

    with torch.device("meta"):
        state = diffusers.UNet2DConditionModel(**RELEASED_DIFFUSERS[family]).state_dict()
        ours = UNet(FAMILIES[family].unet).state_dict()
    detected = detect_unet(state)
    assert (detected.family, detected.layout, detected.config) == (family, "diffusers", FAMILIES[family].unet)
    mapping = diffusers_key_map(detected.config)
    assert sorted(mapping.values()) == sorted(state)
    assert all(state[mapping[key]].shape == value.shape for key, value in ours.items())
