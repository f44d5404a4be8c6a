"""The model-family records: each one consistent with itself, detection through them, custom families, SSD-1B."""
import pytest
import torch

from diffusion_blocks.networks.clip_text import ARCHITECTURES
from diffusion_blocks.networks.families import FAMILIES, TEXT_CONDITIONINGS, LatentFormat, family_for
from diffusion_blocks.networks.prediction import Denoiser, TrainingSpec
from diffusion_blocks.networks.sdxl_conditioning import refiner_vector, sdxl_vector
from diffusion_blocks.networks.unet import UNet, UNetConfig
from diffusion_blocks.networks.unet.detect import detect_unet, diffusers_key_map

PREFIX = "model.diffusion_model."


def meta_state_dict(config):
    with torch.device("meta"):
        return UNet(config).state_dict()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_record_is_consistent(name):
    family = FAMILIES[name]
    assert family.name == name and family.unet is not None
    assert family.unet.context_dim == family.text.width == sum(ARCHITECTURES[u.architecture].width for u in family.text.towers)
    assert family.unet.adm_in_channels == (family.vector.width if family.vector is not None else 0)
    assert family.latent.channels == family.unet.in_channels
    assert family.latent.scale == family.training.latent_scale
    assert family.text.unet_reads_pooled == (family.vector is not None)
    if family.vector is not None:
        assert family.vector.pooled_width == family.text.pooled_width == family.pooled_width
    assert family_for(family.unet) is family and family_for(family.unet, family.training) is family


def test_text_conditionings_are_the_families_distinct_text_records():
    assert list(TEXT_CONDITIONINGS) == ["sd1", "sd2", "sdxl", "sdxl_refiner", "small"]
    assert FAMILIES["ssd1b"].text is TEXT_CONDITIONINGS["sdxl"]
    assert all(FAMILIES[name].text is TEXT_CONDITIONINGS[name] for name in TEXT_CONDITIONINGS)


def test_latent_formats():
    sd, sdxl, pixels = FAMILIES["sd1"].latent, FAMILIES["sdxl"].latent, FAMILIES["small"].latent
    assert (sd.comfy_name, sd.scale, sd.pixels_per_latent, sd.pixel_space) == ("SD15", 0.18215, 8, False)
    assert (sdxl.comfy_name, sdxl.scale, FAMILIES["ssd1b"].latent) == ("SDXL", 0.13025, sdxl)
    assert pixels.pixel_space and pixels.pixels_per_latent == 1 and pixels.comfy_name is None
    latent = torch.randn(2, 4, 8, 8)
    assert torch.equal(sd.to_network(latent), latent * 0.18215)
    torch.testing.assert_close(sd.from_network(sd.to_network(latent)), latent)
    shifted = LatentFormat(16, 1.5, shift=0.25)
    torch.testing.assert_close(shifted.to_network(latent), 1.5 * (latent - 0.25))
    torch.testing.assert_close(shifted.from_network(shifted.to_network(latent)), latent)


def test_vector_conditions_are_the_sdxl_and_refiner_recipes():
    pooled = torch.randn(2, 1280)
    sizes = dict(width=1152, height=896, crop_w=64, crop_h=32)
    sdxl = FAMILIES["sdxl"].vector_condition(pooled, **sizes, target_width=1024, target_height=768)
    assert torch.equal(sdxl, sdxl_vector(pooled, **sizes, target_width=1024, target_height=768))
    assert torch.equal(FAMILIES["ssd1b"].vector_condition(pooled, **sizes), sdxl_vector(pooled, **sizes))
    refiner = FAMILIES["sdxl_refiner"]
    assert torch.equal(refiner.vector_condition(pooled, **sizes), refiner_vector(pooled, **sizes, aesthetic_score=6.0))
    assert torch.equal(refiner.vector_condition(pooled, **sizes, negative=True),
                       refiner_vector(pooled, **sizes, aesthetic_score=2.5))
    assert torch.equal(refiner.vector_condition(pooled, **sizes, aesthetic_score=4.0, negative=True),
                       refiner_vector(pooled, **sizes, aesthetic_score=4.0))
    assert FAMILIES["sd1"].vector_condition(pooled, width=512, height=512) is None
    with pytest.raises(ValueError, match="pooled text 768 wide.*SDXL base.*needs 1280"):
        FAMILIES["sdxl"].vector_condition(torch.randn(1, 768), width=1024, height=1024)


def test_ssd1b_is_detected_from_its_shapes():
    """SSD-1B (ComfyUI 0.3.75's SSD1B: SDXL's text, vector and latents, fewer transformer blocks), in both layouts."""
    config = FAMILIES["ssd1b"].unet
    state = meta_state_dict(config)
    detected = detect_unet({PREFIX + key: value for key, value in state.items()})
    assert (detected.family, detected.config, detected.layout, detected.model_family) == ("ssd1b", config, "ldm",
                                                                                         FAMILIES["ssd1b"])
    diffusers = {theirs: state[ours] for ours, theirs in diffusers_key_map(config).items()}
    assert (detect_unet(diffusers).family, detect_unet(diffusers).config) == ("ssd1b", config)
    assert detect_unet(meta_state_dict(FAMILIES["sdxl"].unet)).family == "sdxl"


def test_published_structure_with_other_channels_or_training_keeps_its_family():
    sd2 = FAMILIES["sd2"]
    v = family_for(sd2.unet, TrainingSpec(prediction="v"))  # SD2.x 768-v
    assert (v.name, v.training.prediction, v.latent, v.text) == ("sd2", "v", sd2.latent, sd2.text)
    inpainting = UNetConfig(**{**FAMILIES["sd1"].unet.to_dict(), "in_channels": 9})
    assert detect_unet(meta_state_dict(inpainting)).family == "sd1"
    family = family_for(inpainting)
    assert family.name == "sd1" and family.latent == FAMILIES["sd1"].latent  # it denoises SD1.x's 4-channel latents
    assert (inpainting.latent_channels, inpainting.concat_channels) == (4, 5)


def test_custom_families_follow_the_config_and_spec():
    base = dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1), transformer_depth=(0, 1),
                transformer_depth_output=(1, 1, 0, 0), context_dim=16, num_heads=2)
    pixels = family_for(UNetConfig(in_channels=3, out_channels=3, **base), TrainingSpec(latent_scale=1.0))
    assert (pixels.name, pixels.unet, pixels.text, pixels.vector) == ("custom", None, None, None)
    assert pixels.latent.pixel_space and pixels.latent.pixels_per_latent == 1
    assert pixels.vector_condition(torch.zeros(1, 8), width=64, height=64) is None
    sdxl_like = family_for(UNetConfig(adm_in_channels=2816, **base), TrainingSpec(latent_scale=0.13025))
    assert sdxl_like.latent == FAMILIES["sdxl"].latent and sdxl_like.vector == FAMILIES["sdxl"].vector
    default = family_for(UNetConfig(**base))
    assert default.training == TrainingSpec() and default.latent == FAMILIES["sd1"].latent
    odd = family_for(UNetConfig(adm_in_channels=100, **base), TrainingSpec(latent_scale=0.5))
    assert (odd.latent.channels, odd.latent.scale, odd.latent.pixels_per_latent, odd.latent.comfy_name) == (4, 0.5, 8, None)
    with pytest.raises(ValueError, match="no recipe for a vector condition of width 100"):
        odd.vector_condition(torch.zeros(1, 4), width=64, height=64)


def test_denoiser_knows_its_family():
    config = UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1,), num_res_blocks=(1,),
                        transformer_depth=(0,), transformer_depth_output=(0, 0), transformer_depth_middle=0,
                        context_dim=0, num_heads=1)
    denoiser = Denoiser(UNet(config), TrainingSpec(prediction="v", latent_scale=1.0))
    assert denoiser.family.name == "custom" and denoiser.family.latent.pixel_space
    with torch.device("meta"):
        small = UNet(FAMILIES["small"].unet)
    assert Denoiser(small, FAMILIES["small"].training).family is FAMILIES["small"]
