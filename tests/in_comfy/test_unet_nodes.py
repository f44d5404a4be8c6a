"""Load U-Net and Predict Noise in an in-process ComfyUI: model folders, ModelPatcher, the picture they make."""
import pytest
import torch
from safetensors.torch import save_file

from harness.nodes import run_node

from diffusion_blocks.networks.prediction import Cond, Denoiser
from diffusion_blocks.networks.unet import UNet, UNetConfig
from diffusion_blocks.networks.unet_loading import METADATA_CONFIG, save_unet

SMALL = UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1), transformer_depth=(0, 1),
                   transformer_depth_output=(1, 1, 0, 0), context_dim=16, num_heads=2)


@pytest.fixture(scope="module")
def nodes(comfy):
    from diffusion_blocks.nodes.unet_nodes import UNET_NODES

    return {cls.GET_SCHEMA().node_id: cls for cls in UNET_NODES}


@pytest.fixture(scope="module")
def model_folders(comfy, tmp_path_factory):
    """A U-Net-only file in diffusion_models/ and a full checkpoint in checkpoints/, registered with folder_paths."""
    import folder_paths

    torch.manual_seed(0)
    unet = UNet(SMALL).eval()
    root = tmp_path_factory.mktemp("models")
    (root / "diffusion_models").mkdir()
    (root / "checkpoints").mkdir()
    save_unet(unet, root / "diffusion_models" / "small_unet.safetensors")
    tensors = {"model.diffusion_model." + k: v.contiguous() for k, v in unet.state_dict().items()}
    tensors["first_stage_model.decoder.conv_in.weight"] = torch.zeros(4, 4, 3, 3)
    save_file(tensors, str(root / "checkpoints" / "small_full.safetensors"), metadata={METADATA_CONFIG: SMALL.to_json()})
    for folder in ("diffusion_models", "checkpoints"):
        folder_paths.add_model_folder_path(folder, str(root / folder), is_default=True)
    return unet


def test_nodes_have_prefix_category_description_and_tooltips(nodes):
    assert set(nodes) == {"DB_LoadUNet", "DB_PredictNoise"}
    for node_id, cls in nodes.items():
        schema = cls.GET_SCHEMA()
        assert schema.category.startswith("diffusion_blocks/") and schema.description
        assert all(item.tooltip for item in schema.inputs), node_id


def test_loader_lists_both_folders_and_wraps_the_network_for_comfyui(nodes, model_folders):
    import comfy.model_patcher

    options = nodes["DB_LoadUNet"].GET_SCHEMA().inputs[0].options
    assert {"diffusion_models/small_unet.safetensors", "checkpoints/small_full.safetensors"} <= set(options)
    for name in ("diffusion_models/small_unet.safetensors", "checkpoints/small_full.safetensors"):
        patcher, = run_node(nodes["DB_LoadUNet"], unet_name=name, weight_dtype="default", prediction="v", zero_snr="auto")
        assert isinstance(patcher, comfy.model_patcher.ModelPatcher) and isinstance(patcher.model.denoiser, Denoiser)
        assert patcher.model.denoiser.prediction == "v" and patcher.model_size() > 0
        state = patcher.model.denoiser.network.state_dict()
        assert all(torch.equal(state[k], v) for k, v in model_folders.state_dict().items())


def test_loader_loads_through_comfyui_memory_management(nodes, model_folders):
    from diffusion_blocks.nodes.unet_nodes import ready

    patcher, = run_node(nodes["DB_LoadUNet"], unet_name="diffusion_models/small_unet.safetensors",
                        weight_dtype="bf16", prediction="auto", zero_snr="auto")
    denoiser, device = ready(patcher)
    assert device == patcher.load_device and denoiser is patcher.model.denoiser
    assert {p.dtype for p in denoiser.network.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        out = denoiser(torch.randn(1, 4, 8, 8, device=device), 2.0, torch.zeros(1, 3, 16, device=device))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_loader_errors_name_the_file(nodes, model_folders):
    with pytest.raises(ValueError, match="^unet_name: 'loras/x.safetensors' is not one of its options"):
        run_node(nodes["DB_LoadUNet"], unet_name="loras/x.safetensors", weight_dtype="default", prediction="auto", zero_snr="auto")
    with pytest.raises(ValueError, match="needs v or x0 prediction"):
        run_node(nodes["DB_LoadUNet"], unet_name="diffusion_models/small_unet.safetensors", weight_dtype="default",
                 prediction="auto", zero_snr="on")


class StubVAE:
    """Stands in for a native VAE: decode() takes latents and gives an IMAGE 8x larger."""

    def decode(self, samples):
        return torch.sigmoid(samples[:, :3]).repeat_interleave(8, -1).repeat_interleave(8, -2).movedim(1, -1)


@pytest.mark.parametrize("vae", [None, StubVAE()])
def test_predict_noise_shows_four_pictures_and_is_reproducible(nodes, model_folders, vae):
    patcher, = run_node(nodes["DB_LoadUNet"], unet_name="diffusion_models/small_unet.safetensors",
                        weight_dtype="fp32", prediction="auto", zero_snr="auto")
    latent = {"samples": torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))}
    positive = [[torch.randn(1, 3, 16), {}]]
    grid, = run_node(nodes["DB_PredictNoise"], unet=patcher, latent=latent, sigma=3.0, seed=5, positive=positive, vae=vae)
    assert grid.ndim == 4 and grid.shape[0] == 1 and grid.shape[-1] == 3
    assert grid.shape[2] > 4 * 256 > grid.shape[1]  # four cells of 256 pixels side by side, captions below
    assert 0 <= grid.min() and grid.max() <= 1
    again, = run_node(nodes["DB_PredictNoise"], unet=patcher, latent=latent, sigma=3.0, seed=5, positive=positive, vae=vae)
    other, = run_node(nodes["DB_PredictNoise"], unet=patcher, latent=latent, sigma=3.0, seed=6, positive=positive, vae=vae)
    assert torch.equal(grid, again) and not torch.equal(grid, other)


def test_predict_noise_rejects_a_latent_of_the_wrong_kind(nodes, model_folders):
    patcher, = run_node(nodes["DB_LoadUNet"], unet_name="diffusion_models/small_unet.safetensors",
                        weight_dtype="fp32", prediction="auto", zero_snr="auto")
    with pytest.raises(ValueError, match=r"does not fit a U-Net of 4-channel latents"):
        run_node(nodes["DB_PredictNoise"], unet=patcher, latent={"samples": torch.zeros(1, 16, 8, 8)}, sigma=1.0, seed=0)


def comfy_vector(model_class, **kwargs):
    """ComfyUI's own SDXL / refiner vector y (model_base.<class>.encode_adm), the independent reference."""
    from types import SimpleNamespace

    from comfy.ldm.modules.diffusionmodules.openaimodel import Timestep

    return model_class.encode_adm(SimpleNamespace(embedder=Timestep(256), noise_augmentor=None), **kwargs)


def test_sdxl_conditioning_becomes_text_and_vector_as_comfyui_builds_it(comfy):
    import comfy.model_base

    from diffusion_blocks.networks.families import FAMILIES
    from diffusion_blocks.pipeline import condition, empty_condition

    sdxl, refiner = FAMILIES["sdxl"], FAMILIES["sdxl_refiner"]
    context, pooled = torch.randn(1, 77, 16), torch.randn(1, 1280)
    cond = condition(sdxl, context, pooled, pixel_size=(1024, 768))  # the image's (height, width)
    assert isinstance(cond, Cond) and cond.context is context
    torch.testing.assert_close(cond.y, comfy_vector(comfy.model_base.SDXL, pooled_output=pooled, width=768, height=1024))
    sizes = dict(width=2048, height=1536, crop_w=8, crop_h=16, target_width=1024, target_height=768)
    cond = condition(sdxl, context, pooled, pixel_size=(1024, 768), hints=sizes)
    torch.testing.assert_close(cond.y, comfy_vector(comfy.model_base.SDXL, pooled_output=pooled, **sizes))
    assert empty_condition(sdxl, 2048, pixel_size=(512, 512)).y.shape == (1, 2816)
    for negative, prompt_type in ((False, "positive"), (True, "negative")):
        got = condition(refiner, context, pooled, pixel_size=(1024, 1024), negative=negative)
        torch.testing.assert_close(got.y, comfy_vector(comfy.model_base.SDXLRefiner, pooled_output=pooled, width=1024,
                                                       height=1024, prompt_type=prompt_type))
    with pytest.raises(ValueError, match="needs the pooled text"):
        condition(sdxl, context, None, pixel_size=(1024, 1024))


def test_the_bundled_model_is_the_default_choice_of_both_loaders(nodes, comfy):
    from diffusion_blocks.nodes.text_nodes import TEXT_NODES

    bundled = "diffusion_blocks/diffusion_blocks_shapes.safetensors"
    load_text = next(cls for cls in TEXT_NODES if cls.GET_SCHEMA().node_id == "DB_LoadTextEncoder")
    for node, name in ((nodes["DB_LoadUNet"], "unet_name"), (load_text, "file")):
        choice = next(i for i in node.GET_SCHEMA().inputs if i.id == name)
        assert choice.options[0] == bundled
    patcher, = run_node(nodes["DB_LoadUNet"], unet_name=bundled, weight_dtype="default", prediction="auto",
                        zero_snr="auto")
    assert patcher.model.denoiser.network.family == "small" and patcher.model.denoiser.prediction == "v"
    loaded, = run_node(load_text, file=bundled, second_file="none", family="auto", dtype="auto")
    assert loaded.encoder.family.name == "small"
