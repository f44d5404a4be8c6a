"""Text nodes in an in-process ComfyUI: schemas, loading from ComfyUI's folders, native CONDITIONING, token view."""
import pytest
import torch
from safetensors.torch import save_file

from harness.clip_weights import hf_state_dict, random_hf_tower
from harness.clip_weights import one_torch_thread  # noqa: F401  (autouse fixture)
from harness.nodes import run_node

pytestmark = pytest.mark.usefixtures("comfy")


@pytest.fixture(scope="module")
def text_nodes():
    from diffusion_blocks.nodes.text_nodes import TEXT_NODES

    return {cls.GET_SCHEMA().node_id: cls for cls in TEXT_NODES}


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    """ComfyUI's checkpoints and text_encoders folders extended with the random SD1.x checkpoint and small towers."""
    import folder_paths

    from diffusion_blocks.devtools.sd_checkpoint import sd1_checkpoint_path

    base = tmp_path_factory.mktemp("models")
    (base / "checkpoints").mkdir()
    (base / "checkpoints" / "random_sd1.safetensors").symlink_to(sd1_checkpoint_path())
    (base / "text_encoders").mkdir()
    save_file(hf_state_dict(random_hf_tower("clip_l", seed=41)), base / "text_encoders" / "small_clip_l.safetensors")
    save_file(hf_state_dict(random_hf_tower("clip_g", seed=42, width=192)), base / "text_encoders" / "small_clip_g.safetensors")
    save_file({"model.diffusion_model.out.2.weight": torch.zeros(4, 320, 3, 3)}, base / "text_encoders" / "unet_only.safetensors")
    for folder in ("checkpoints", "text_encoders"):
        folder_paths.add_model_folder_path(folder, str(base / folder))
    yield base
    for folder in ("checkpoints", "text_encoders"):  # leave ComfyUI's folders as other tests expect them
        folder_paths.folder_names_and_paths[folder][0].remove(str(base / folder))


def test_schemas_follow_the_house_style(text_nodes):
    assert set(text_nodes) == {"DB_LoadTextEncoder", "DB_EncodeText", "DB_EncodeTextSDXL", "DB_ShowTokens"}
    for node_id, cls in text_nodes.items():
        schema = cls.GET_SCHEMA()
        assert schema.category.startswith("diffusion_blocks/") and schema.description and schema.display_name
        assert all(item.tooltip for item in schema.inputs), node_id


def load(text_nodes, file, **options):
    settings = dict(second_file="none", family="auto", dtype="auto") | options
    loaded, = run_node(text_nodes["DB_LoadTextEncoder"], file=file, **settings)
    return loaded


def test_checkpoint_text_encoder_gives_native_conditioning(text_nodes, model_folders):
    assert "checkpoints/random_sd1.safetensors" in text_nodes["DB_LoadTextEncoder"].GET_SCHEMA().inputs[0].options
    loaded = load(text_nodes, "checkpoints/random_sd1.safetensors")
    assert loaded.encoder.family.name == "sd1" and loaded.encoder.towers["l"].token_embedding.weight.dtype == torch.float32
    conditioning, = run_node(text_nodes["DB_EncodeText"], text_encoder=loaded, text="a (red:1.2) fox", stop_at_clip_layer=0)
    (cond, extra), = conditioning
    assert cond.shape == (1, 77, 768) and cond.dtype == torch.float32 and cond.device.type == "cpu"
    assert set(extra) == {"pooled_output"} and extra["pooled_output"].shape == (1, 768)
    reference, pooled = loaded.encoder.encode("a (red:1.2) fox")
    assert torch.equal(cond, reference) and torch.equal(extra["pooled_output"], pooled)
    skipped, = run_node(text_nodes["DB_EncodeText"], text_encoder=loaded, text="a (red:1.2) fox", stop_at_clip_layer=-2)
    assert torch.equal(skipped[0][0], loaded.encoder.encode("a (red:1.2) fox", layer=-2)[0])


def test_sdxl_from_two_standalone_files_with_sizes(text_nodes, model_folders):
    loaded = load(text_nodes, "text_encoders/small_clip_g.safetensors", second_file="text_encoders/small_clip_l.safetensors",
                  family="sdxl")
    sizes = dict(width=1152, height=896, crop_w=0, crop_h=32, target_width=1024, target_height=1024)
    conditioning, = run_node(text_nodes["DB_EncodeTextSDXL"], text_encoder=loaded, text="a red fox", stop_at_clip_layer=0, **sizes)
    (cond, extra), = conditioning
    assert cond.shape == (1, 77, 128 + 192) and extra["pooled_output"].shape == (1, 96)
    assert {k: extra[k] for k in sizes} == sizes


def test_sdxl_node_refuses_other_families(text_nodes, model_folders):
    loaded = load(text_nodes, "text_encoders/small_clip_l.safetensors", family="sd1")
    with pytest.raises(ValueError, match="sd1 text encoder; this node needs SDXL"):
        run_node(text_nodes["DB_EncodeTextSDXL"], text_encoder=loaded, text="x", width=1024, height=1024, crop_w=0, crop_h=0,
                 target_width=1024, target_height=1024, stop_at_clip_layer=0)


def test_loading_errors_are_clear(text_nodes, model_folders):
    """The pack's own error types leave the node as plain ValueErrors (nodes/checks.py), with the same message."""
    with pytest.raises(ValueError, match="U-Net") as caught:
        load(text_nodes, "text_encoders/unet_only.safetensors")
    assert type(caught.value) is ValueError
    with pytest.raises(ValueError, match="^file: 'somewhere/else.safetensors' is not one of its options"):
        load(text_nodes, "somewhere/else.safetensors")
    with pytest.raises(ValueError, match="choose the family"):
        load(text_nodes, "text_encoders/small_clip_l.safetensors")


def test_missing_embedding_is_a_clear_error(text_nodes, model_folders):
    import folder_paths

    loaded = load(text_nodes, "text_encoders/small_clip_l.safetensors", family="sd1")
    with pytest.raises(ValueError, match="^embedding:not_there: no file .* in ComfyUI's embeddings folder") as caught:
        run_node(text_nodes["DB_EncodeText"], text_encoder=loaded, text="a embedding:not_there", stop_at_clip_layer=0)
    assert type(caught.value) is ValueError
    assert not any(folder in str(caught.value) for folder in folder_paths.get_folder_paths("embeddings"))


@pytest.mark.parametrize("text", ["", "a (red:1.3) fox, \\(escaped\\) (unclosed", "cat " * 10_000],
                         ids=["empty", "syntax", "10000-tokens"])
def test_show_tokens_draws_an_image(text_nodes, text):
    image, = run_node(text_nodes["DB_ShowTokens"], text=text, width=768)
    assert image.ndim == 4 and image.shape[0] == 1 and image.shape[2] == 768 and image.shape[3] == 3
    assert image.dtype == torch.float32 and 0.0 <= image.min() and image.max() <= 1.0
    assert image.shape[1] <= 4096


def tiny_native_model(config_class, context_dim, adm_channels=None):
    """A small ComfyUI model of the given family (its own BaseModel/SDXL class and conditioning code), random weights."""
    import comfy.model_patcher

    unet = dict(image_size=32, in_channels=4, out_channels=4, model_channels=64, num_res_blocks=1, channel_mult=(1, 2),
                use_spatial_transformer=True, context_dim=context_dim, legacy=False, use_linear_in_transformer=True,
                adm_in_channels=adm_channels, num_classes="sequential" if adm_channels else None, transformer_depth=[1, 1],
                transformer_depth_middle=1, transformer_depth_output=[1, 1, 1, 1], use_temporal_attention=False)
    model = config_class(unet).get_model({})
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():  # ComfyUI leaves weights uninitialised until a checkpoint fills them
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def ksample(model, positive, negative):
    from nodes import common_ksampler

    latent, = common_ksampler(model, 0, 2, 5.0, "euler", "normal", positive, negative, {"samples": torch.zeros(1, 4, 8, 8)})
    return latent["samples"]


def test_conditioning_drives_comfyui_ksampler(text_nodes, model_folders):
    import comfy.supported_models

    sd1 = load(text_nodes, "text_encoders/small_clip_l.safetensors", family="sd1")
    encode = lambda text: run_node(text_nodes["DB_EncodeText"], text_encoder=sd1, text=text, stop_at_clip_layer=0)[0]
    model = tiny_native_model(comfy.supported_models.SD15, context_dim=128)
    fox, cat = ksample(model, encode("a red fox"), encode("")), ksample(model, encode("a cat " * 30), encode(""))
    assert torch.isfinite(fox).all() and not torch.allclose(fox, cat)

    sdxl = load(text_nodes, "text_encoders/small_clip_g.safetensors", second_file="text_encoders/small_clip_l.safetensors",
                family="sdxl")
    sizes = dict(width=1024, height=1024, crop_w=0, crop_h=0, target_width=1024, target_height=1024)
    positive, = run_node(text_nodes["DB_EncodeTextSDXL"], text_encoder=sdxl, text="a red fox", stop_at_clip_layer=0, **sizes)
    negative, = run_node(text_nodes["DB_EncodeTextSDXL"], text_encoder=sdxl, text="", stop_at_clip_layer=0, **sizes)
    model = tiny_native_model(comfy.supported_models.SDXL, context_dim=128 + 192, adm_channels=96 + 6 * 256)
    assert torch.isfinite(ksample(model, positive, negative)).all()  # y = pooled + sizes, as SDXL's own code builds it
