"""load_text_encoder: every key layout, the family from shapes, and clear errors for anything else."""
import pytest
import torch
from safetensors.torch import save_file

from diffusion_blocks.networks.clip_text import ARCHITECTURES
from diffusion_blocks.networks.text_encoder_loading import load_text_encoder
from diffusion_blocks.networks.weights import SafetensorsFile, WeightFileError
from harness.clip_weights import hf_state_dict, openclip_state_dict, random_hf_tower, token_batch
from harness.clip_weights import one_torch_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def clip_l():
    return random_hf_tower("clip_l", seed=11)


@pytest.fixture(scope="module")
def clip_g():
    return random_hf_tower("clip_g", seed=12, width=192)


def reference_state(hf):
    """Our tower's tensors when loaded from plain Hugging Face names."""
    tower, = load_text_encoder(hf_state_dict(hf), family="sd1" if hf.config.hidden_act == "quick_gelu" else "sd2").towers.values()
    return tower.state_dict()


def assert_same_tower(tower, expected):
    state = tower.state_dict()
    assert state.keys() == expected.keys()
    for key in state:
        assert torch.equal(state[key], expected[key]), key


@pytest.mark.parametrize("prefix", ["cond_stage_model.transformer.", "", "clip_l.transformer."])
def test_sd1_layouts(clip_l, prefix):
    state = hf_state_dict(clip_l, prefix, with_projection=False)
    state[prefix + "text_model.embeddings.position_ids"] = torch.arange(77)[None]
    state["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(1)
    encoder = load_text_encoder(state, family="sd1")
    expected = {k: v for k, v in reference_state(clip_l).items() if k != "projection.weight"}
    assert_same_tower(encoder.towers["l"], expected)


def test_old_sd1_layout_without_text_model_level(clip_l):
    state = {k.replace("text_model.", ""): v for k, v in hf_state_dict(clip_l, "cond_stage_model.transformer.").items()}
    tower, = load_text_encoder(state, family="sd1").towers.values()
    assert_same_tower(tower, reference_state(clip_l))


def test_sd2_openclip_layout():
    hf = random_hf_tower("clip_h", seed=13)
    state = openclip_state_dict(hf, "cond_stage_model.model.")
    state["cond_stage_model.model.visual.proj"] = torch.zeros(2, 2)
    tower, = load_text_encoder(state, family="sd2").towers.values()
    assert_same_tower(tower, reference_state(hf))


def test_sdxl_single_file_layout(clip_l, clip_g):
    state = {**hf_state_dict(clip_l, "conditioner.embedders.0.transformer.", with_projection=False),
             **openclip_state_dict(clip_g, "conditioner.embedders.1.model.")}
    encoder = load_text_encoder(state, family="sdxl")
    assert set(encoder.towers) == {"l", "g"}
    assert_same_tower(encoder.towers["g"], reference_state(clip_g))
    tokens = token_batch(batch=1)
    with torch.no_grad():
        torch.testing.assert_close(encoder.towers["g"](tokens).projected, clip_g(input_ids=tokens).text_embeds,
                                   rtol=1e-4, atol=1e-4)


def test_two_standalone_files_make_sdxl(tmp_path, clip_l, clip_g):
    save_file(hf_state_dict(clip_l), tmp_path / "clip_l.safetensors")
    save_file(hf_state_dict(clip_g), tmp_path / "clip_g.safetensors")
    encoder = load_text_encoder([tmp_path / "clip_g.safetensors", tmp_path / "clip_l.safetensors"], family="sdxl")
    assert encoder.towers["l"].config.width == 128 and encoder.towers["g"].config.width == 192


def test_single_file_checkpoint_reads_only_the_text_tower(tmp_path, clip_l, monkeypatch):
    state = hf_state_dict(clip_l, "cond_stage_model.transformer.")
    state["model.diffusion_model.out.2.weight"] = torch.zeros(4, 320, 3, 3)
    save_file(state, tmp_path / "checkpoint.safetensors")
    read, original = [], SafetensorsFile._read
    monkeypatch.setattr(SafetensorsFile, "_read", lambda self, f, key, *rest: read.append(key) or original(self, f, key, *rest))
    encoder = load_text_encoder(tmp_path / "checkpoint.safetensors", family="sd1", dtype=torch.float16)
    assert read and all(key.startswith("cond_stage_model.transformer.") for key in read)
    expected = {k: v.half() for k, v in reference_state(clip_l).items()}
    assert_same_tower(encoder.towers["l"], expected)


def full_size_meta(architecture, naming, prefix):
    """A full-size tower's keys and shapes on the meta device (no memory), in either naming."""
    real = ARCHITECTURES[architecture]
    with torch.device("meta"):
        import transformers

        config = transformers.CLIPTextConfig(hidden_size=real.width, intermediate_size=real.mlp_width,
                                             num_hidden_layers=real.layers, num_attention_heads=real.heads,
                                             projection_dim=real.projection, hidden_act=real.activation)
        model = transformers.CLIPTextModelWithProjection(config)
        return hf_state_dict(model, prefix) if naming == "hf" else openclip_state_dict(model, prefix)


@pytest.mark.parametrize("parts, family", [
    ([("clip_l", "hf", "cond_stage_model.transformer.")], "sd1"),
    ([("clip_h", "openclip", "cond_stage_model.model.")], "sd2"),
    ([("clip_l", "hf", "conditioner.embedders.0.transformer."), ("clip_g", "openclip", "conditioner.embedders.1.model.")], "sdxl"),
    ([("clip_g", "openclip", "conditioner.embedders.0.model.")], "sdxl_refiner"),
    ([("clip_g", "hf", "")], "sdxl_refiner"),
])
def test_family_from_full_size_shapes(parts, family):
    state = {}
    for architecture, naming, prefix in parts:
        state.update(full_size_meta(architecture, naming, prefix))
    encoder = load_text_encoder(state, device="meta")
    assert encoder.family.name == family
    for use in encoder.family.towers:
        assert encoder.towers[use.name].config == ARCHITECTURES[use.architecture]


def test_files_without_a_text_encoder_say_what_they_hold():
    with pytest.raises(WeightFileError, match="no CLIP text encoder found.*U-Net"):
        load_text_encoder({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)})
    with pytest.raises(WeightFileError, match="T5"):
        load_text_encoder({"encoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(1)})


def test_incomplete_or_misshapen_towers_are_clear_errors(clip_l):
    state = hf_state_dict(clip_l)
    del state["text_model.encoder.layers.3.mlp.fc2.weight"]
    with pytest.raises(WeightFileError, match="1 missing.*blocks.3.mlp.fc2.weight"):
        load_text_encoder(state, family="sd1")
    state = hf_state_dict(clip_l)
    state["text_model.final_layer_norm.weight"] = torch.zeros(5)
    with pytest.raises(WeightFileError, match="misshapen"):
        load_text_encoder(state, family="sd1")


def test_unknown_widths_and_wrong_families_are_clear_errors(clip_l, clip_g):
    with pytest.raises(WeightFileError, match="no model family.*choose the family"):
        load_text_encoder(hf_state_dict(clip_l))
    with pytest.raises(WeightFileError, match="sdxl needs 2 text tower"):
        load_text_encoder(hf_state_dict(clip_l), family="sdxl")
    with pytest.raises(ValueError, match="family 'sd3'"):
        load_text_encoder(hf_state_dict(clip_l), family="sd3")
    with pytest.raises(WeightFileError, match="CLIP ViT-L/14 .* where OpenCLIP ViT-H/14"):
        load_text_encoder(full_size_meta("clip_l", "hf", ""), family="sd2", device="meta")
    with pytest.raises(WeightFileError, match="lacks"):
        load_text_encoder(hf_state_dict(clip_g, with_projection=False), family="sdxl_refiner")


def test_unreadable_files_are_clear_errors(tmp_path):
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(WeightFileError, match="not a readable"):
        load_text_encoder(tmp_path / "broken.safetensors")
    with pytest.raises(WeightFileError, match="no such file"):
        load_text_encoder(tmp_path / "missing.safetensors")


def test_diffusers_pipeline_folder(tmp_path, clip_l, clip_g):
    for sub, model in (("text_encoder", clip_l), ("text_encoder_2", clip_g)):
        (tmp_path / sub).mkdir()
        save_file(hf_state_dict(model), tmp_path / sub / "model.safetensors")
    (tmp_path / "unet").mkdir()
    encoder = load_text_encoder(tmp_path, family="sdxl", dtype="bf16")
    assert encoder.towers["g"].config.width == 192 and encoder.towers["l"].token_embedding.weight.dtype == torch.bfloat16
    with pytest.raises(WeightFileError, match="no text encoder in it"):
        load_text_encoder(tmp_path / "unet")
    with pytest.raises(ValueError, match="dtype must be"):
        load_text_encoder(tmp_path, family="sdxl", dtype="float8")


def test_sd2_without_projection_pools_unprojected():
    hf = random_hf_tower("clip_h", seed=14)
    encoder = load_text_encoder(hf_state_dict(hf, with_projection=False), family="sd2")
    _, pooled = encoder.encode("a red fox")
    assert pooled.shape == (1, 128)  # SD2's U-Net never reads the pooled output
