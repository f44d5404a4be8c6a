"""load_unet: every file layout, dtype and detection path, and a clear error for each way a file can be wrong."""
import json

import pytest
import torch
from safetensors.torch import save_file

from diffusion_blocks.networks.families import FAMILIES
from diffusion_blocks.networks.prediction import TrainingSpec
from diffusion_blocks.networks.unet import UNet, UNetConfig
from diffusion_blocks.networks.unet.detect import detect_unet
from diffusion_blocks.networks.unet_loading import SD2_V_PROBE, UNetLoadError, _from_state_dict, _training, load_unet, save_unet
from diffusion_blocks.networks.weights import WeightFileError

# A reduced-width SD1.x-like U-Net (not a published architecture: loading it needs its config).
SMALL = UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1), transformer_depth=(1, 1),
                   transformer_depth_output=(1, 1, 1, 1), context_dim=16, num_heads=2)
PREFIX = "model.diffusion_model."


@pytest.fixture(scope="module")
def small_unet():
    torch.manual_seed(0)
    return UNet(SMALL).eval()


def single_file(unet, path, extra=None, metadata=None):
    """The U-Net in a full checkpoint's layout next to other parts' tensors, as the original SD files are."""
    tensors = {PREFIX + key: value.contiguous() for key, value in unet.state_dict().items()}
    tensors.update({"first_stage_model.decoder.conv_in.weight": torch.zeros(4, 4, 3, 3),
                    "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.ones(16)})
    tensors.update(extra or {})
    save_file(tensors, str(path), metadata=metadata)
    return path


def run(unet, seed=1):
    g = torch.Generator().manual_seed(seed)
    x, context = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 5, 16, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([20.0, 900.0]), context)


def test_single_file_checkpoint_gives_identical_weights_and_outputs(small_unet, tmp_path):
    loaded = load_unet(single_file(small_unet, tmp_path / "model.safetensors"), config=SMALL)
    assert loaded.state_dict().keys() == small_unet.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in small_unet.state_dict().items())
    assert torch.equal(run(loaded), run(small_unet))
    assert not any(p.is_meta or p.requires_grad for p in loaded.parameters())
    assert loaded.trained_as == TrainingSpec() and loaded.family == "custom"


def test_state_dict_and_pickled_checkpoints_load_too(small_unet, tmp_path):
    state = {PREFIX + k: v.clone() for k, v in small_unet.state_dict().items()}
    assert torch.equal(run(load_unet(state, config=SMALL)), run(small_unet))
    torch.save({"state_dict": state}, tmp_path / "model.ckpt")
    assert torch.equal(run(load_unet(tmp_path / "model.ckpt", config=SMALL)), run(small_unet))


def test_standalone_file_saved_with_its_config_needs_no_hint(small_unet, tmp_path):
    spec = TrainingSpec(prediction="v", zero_snr=True, latent_scale=0.5)
    path = save_unet(small_unet, tmp_path / "unet.safetensors", spec=spec)
    loaded = load_unet(path)
    assert loaded.config == SMALL and loaded.trained_as == spec
    assert torch.equal(run(loaded), run(small_unet))


@pytest.mark.parametrize("dtype, name, tolerance", [(torch.float16, "fp16", 2e-2), (torch.bfloat16, "bf16", 5e-2)])
def test_half_precision_weights(small_unet, tmp_path, dtype, name, tolerance):
    loaded = load_unet(save_unet(small_unet, tmp_path / "unet.safetensors"), dtype=name)
    assert {p.dtype for p in loaded.parameters()} == {dtype}
    result, expected = run(loaded), run(small_unet)
    assert result.dtype == torch.float32  # returned in the input's dtype
    assert ((result - expected).abs().max() / expected.abs().max()).item() < tolerance


def test_overrides_of_prediction_and_zero_snr(small_unet, tmp_path):
    path = single_file(small_unet, tmp_path / "model.safetensors")
    assert load_unet(path, config=SMALL, prediction="v", zero_snr=True).trained_as.zero_snr
    with pytest.raises(ValueError, match="zero-terminal-SNR schedule needs v or x0"):
        load_unet(path, config=SMALL, zero_snr=True)
    with pytest.raises(ValueError, match="prediction must be one of eps, v, x0"):
        load_unet(path, config=SMALL, prediction="epsilon")
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_unet(path, config=SMALL, dtype="fp8")


def test_markers_in_the_checkpoint_say_v_prediction_and_zero_snr(small_unet, tmp_path):
    marked = single_file(small_unet, tmp_path / "vpred.safetensors", extra={"v_pred": torch.tensor([]), "ztsnr": torch.tensor([])})
    assert load_unet(marked, config=SMALL).trained_as == TrainingSpec(prediction="v", zero_snr=True)
    spec = single_file(small_unet, tmp_path / "modelspec.safetensors", metadata={"modelspec.prediction_type": "v"})
    assert load_unet(spec, config=SMALL).trained_as.prediction == "v"
    edm = single_file(small_unet, tmp_path / "edm.safetensors", extra={"edm_vpred.sigma_max": torch.tensor(80.0)})
    with pytest.raises(UNetLoadError, match="EDM-parameterised"):
        load_unet(edm, config=SMALL)
    assert load_unet(edm, config=SMALL, prediction="v").trained_as.prediction == "v"


def test_sd2_v_models_are_told_apart_by_their_weights():
    """SD2.x 512 (eps) and 768-v have the same shapes; the v fine-tune's probe LayerNorm bias is spread wider."""
    with torch.device("meta"):
        shapes = UNet(FAMILIES["sd2"].unet).state_dict()
    for spread, expected in ((0.13, "v"), (0.06, "eps")):
        state = {PREFIX + k: v for k, v in shapes.items()}
        state[PREFIX + SD2_V_PROBE] = torch.randn(640, generator=torch.Generator().manual_seed(0)) * spread
        weights = _from_state_dict(state)
        detected = detect_unet(weights.shapes)
        assert detected.family == "sd2"
        assert _training(detected, weights, None, None).prediction == expected


def test_diffusers_pipeline_folder_reads_scheduler_and_vae_configs(small_unet, tmp_path):
    diffusers = pytest.importorskip("diffusers")
    model = diffusers.UNet2DConditionModel(sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
                                           down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                           cross_attention_dim=16, attention_head_dim=2)
    model.save_pretrained(tmp_path / "unet")
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "beta_schedule": "scaled_linear",
         "beta_start": 0.001, "beta_end": 0.02, "num_train_timesteps": 1000}))
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"scaling_factor": 0.13025}))
    loaded = load_unet(tmp_path)
    assert loaded.trained_as == TrainingSpec(prediction="v", zero_snr=True, beta_start=0.001, beta_end=0.02, latent_scale=0.13025)
    assert loaded.config.num_heads == 2 and loaded.config.transformer_depth == (1, 0)
    # the same weights straight from the file: no scheduler, the family's defaults
    assert load_unet(tmp_path / "unet" / "diffusion_pytorch_model.safetensors").trained_as == TrainingSpec()

    config = json.loads((tmp_path / "unet" / "config.json").read_text())
    (tmp_path / "unet" / "config.json").write_text(json.dumps({**config, "resnet_time_scale_shift": "scale_shift"}))
    with pytest.raises(UNetLoadError, match="resnet_time_scale_shift='scale_shift' is not supported"):
        load_unet(tmp_path)


# ---- what goes wrong ------------------------------------------------------------------------------


def test_a_vae_is_not_a_unet(tmp_path):
    path = tmp_path / "vae.safetensors"
    save_file({"encoder.down.0.block.0.conv1.weight": torch.zeros(8, 8, 3, 3), "decoder.up.0.upsample.conv.weight": torch.zeros(8, 8, 3, 3)}, str(path))
    with pytest.raises(UNetLoadError, match=r"vae.safetensors: not a U-Net: it looks like a VAE .*expected the U-Net of a Stable Diffusion checkpoint"):
        load_unet(path)


def test_a_text_encoder_and_an_empty_file_are_named(tmp_path):
    path = tmp_path / "clip.safetensors"
    save_file({"text_model.embeddings.token_embedding.weight": torch.zeros(10, 8)}, str(path))
    with pytest.raises(UNetLoadError, match="looks like a CLIP text encoder"):
        load_unet(path)
    with pytest.raises(UNetLoadError, match="holds no tensors"):
        load_unet({})


def test_a_truncated_file(small_unet, tmp_path):
    path = single_file(small_unet, tmp_path / "model.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UNetLoadError, match=r"truncated: its header describes \d+ bytes, the file has \d+"):
        load_unet(path, config=SMALL)
    path.write_bytes(data[:100])
    with pytest.raises(UNetLoadError, match="does not fit"):
        load_unet(path)
    assert issubclass(UNetLoadError, WeightFileError)


def test_not_a_weight_file(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UNetLoadError, match="unknown weight format '.txt'"):
        load_unet(tmp_path / "notes.txt")
    with pytest.raises(UNetLoadError, match="no such file or folder"):
        load_unet(tmp_path / "missing.safetensors")
    with pytest.raises(UNetLoadError, match="no diffusers U-Net in it"):
        load_unet(tmp_path)


def test_unknown_architecture_names_what_was_found_and_what_is_known(small_unet, tmp_path):
    with pytest.raises(UNetLoadError, match=r"unknown U-Net architecture: 32 channels x \(1, 2\).*expected one of SD1.x "
                                            r"\(320 channels.*SDXL base.*pass config=UNetConfig"):
        load_unet(single_file(small_unet, tmp_path / "model.safetensors"))


def test_missing_unexpected_and_misshapen_tensors(small_unet, tmp_path):
    state = {PREFIX + k: v for k, v in small_unet.state_dict().items()}
    incomplete = dict(state)
    incomplete.pop(PREFIX + "output_blocks.1.1.transformer_blocks.0.attn2.to_v.weight")
    with pytest.raises(UNetLoadError, match=r"missing 1: model.diffusion_model.output_blocks.1.1.transformer_blocks.0.attn2.to_v.weight"):
        load_unet(incomplete, config=SMALL)
    extra = {**state, PREFIX + "input_blocks.1.0.time_stack.weight": torch.zeros(3)}
    with pytest.raises(UNetLoadError, match=r"unexpected 1: .*time_stack"):
        load_unet(extra, config=SMALL)
    wide = UNetConfig(**{**SMALL.to_dict(), "context_dim": 24})
    with pytest.raises(UNetLoadError, match=r"wrong shape \d+: .*attn2.to_k.weight \(64, 16\) \(expected \(64, 24\)\)"):
        load_unet(state, config=wide)
