"""load_unet: a Stable Diffusion U-Net from a single-file checkpoint, a standalone U-Net file or a diffusers folder.

The architecture is read from the tensors' shapes (never the file name), the network is built on the
meta device (no random init, no memory) and the weights are streamed in one tensor at a time, already
in the target dtype, then assigned: loading peaks at about the weights' own size.
"""
import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from .prediction import TrainingSpec
from .unet import UNet, UNetConfig
from .unet.detect import UnknownArchitectureError, detect_unet, diffusers_key_map
from .weights import (PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES, Device, PathLike, SafetensorsFile, WeightFileError,
                      parse_dtype, read_state_dict)

# SD2.x 512 (eps) and 768-v (v) share every shape; the v fine-tune is told apart by one LayerNorm bias, whose
# spread is ~0.13 in 768-v and ~0.06 in the eps models (the threshold ComfyUI 0.3.75 uses as well).
SD2_V_PROBE, SD2_V_THRESHOLD = "output_blocks.11.1.transformer_blocks.0.norm1.bias", 0.09
METADATA_CONFIG, METADATA_TRAINING = "diffusion_blocks.unet_config", "diffusion_blocks.training"
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                     "diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.fp16.safetensors.index.json",
                     "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin")
MODELSPEC_PREDICTIONS = {"epsilon": "eps", "eps": "eps", "v": "v", "v_prediction": "v", "x0": "x0", "sample": "x0"}
DIFFUSERS_PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
DIFFUSERS_BETAS = {"scaled_linear": "scaled_linear", "linear": "linear", "squaredcos_cap_v2": "cosine", "sigmoid": "sigmoid"}
# diffusers UNet2DConditionModel options and the only values this network implements.
DIFFUSERS_SUPPORTED = {
    "center_input_sample": (False,), "flip_sin_to_cos": (True,), "freq_shift": (0,), "only_cross_attention": (False,),
    "dual_cross_attention": (False,), "norm_num_groups": (32,), "norm_eps": (1e-5,), "act_fn": ("silu",),
    "resnet_time_scale_shift": ("default",), "time_embedding_type": ("positional",), "conv_in_kernel": (3,),
    "conv_out_kernel": (3,), "class_embed_type": (None, "projection"), "addition_embed_type": (None, "text_time"),
    "encoder_hid_dim": (None,), "time_cond_proj_dim": (None,), "attention_type": ("default",),
    "mid_block_type": ("UNetMidBlock2DCrossAttn",), "resnet_out_scale_factor": (1.0,), "mid_block_scale_factor": (1,),
    "downsample_padding": (1,), "class_embeddings_concat": (False,), "cross_attention_norm": (None,),
    "time_embedding_dim": (None,), "timestep_post_act": (None,), "addition_time_embed_dim": (None, 256),
}


class UNetLoadError(WeightFileError):
    """A U-Net weight file or state dict that cannot be loaded, saying what was found and what was expected."""


def load_unet(source: PathLike | Mapping[str, torch.Tensor], dtype: torch.dtype | str = torch.float32,
              device: Device = "cpu", config: UNetConfig | None = None, prediction: str | None = None,
              zero_snr: bool | None = None, operations=None) -> UNet:
    """A UNet with the weights of `source`: a file path, a diffusers folder, or a state dict.

    `dtype`: torch dtype or a name (weights.parse_dtype). `config` forces the architecture (for a network that
    is none of the published ones). `prediction` ("eps", "v", "x0") and `zero_snr` override what the
    checkpoint says. `operations`: the layer classes to build it from (as UNet's; torch.nn when None).
    The result carries `.family` and `.trained_as` (a TrainingSpec) for Denoiser, and `.source_file`,
    the file's name (no folders), for error messages.
    A file that cannot be read is a UNetLoadError (a WeightFileError) naming the file and the fault.
    """
    dtype = parse_dtype(dtype)
    try:
        return _load(source, dtype, device, config, prediction, zero_snr, operations)
    except UNetLoadError:
        raise
    except WeightFileError as error:  # the file reader's own errors, under the loader's name
        raise UNetLoadError(str(error)) from None


def _load(source, dtype, device, config, prediction, zero_snr, operations):
    weights = _open(source)
    try:
        detected = detect_unet(weights.shapes, config=config or weights.stored_config(), heads=weights.heads())
    except UnknownArchitectureError as error:
        raise UNetLoadError(f"{weights.name}: {error}") from None
    with torch.device("meta"):
        template = UNet(detected.config)  # every parameter's name and shape (a host's layers may make some on loading)
        unet = UNet(detected.config, operations)
    keys = _key_map(detected, weights, template)
    _check_complete(template, detected, keys, weights)
    trained_as = _training(detected, weights, prediction, zero_snr)
    state = {ours: weights.read(theirs, dtype, device) for ours, theirs in keys.items()}
    unet.load_state_dict(state, strict=True, assign=True)
    unet.family, unet.trained_as = detected.family, trained_as
    unet.source_file = None if isinstance(source, Mapping) else weights.name  # its name only, for error messages
    return unet.eval().requires_grad_(False)


def save_unet(unet: UNet, path: PathLike, spec: TrainingSpec | None = None) -> Path:
    """Write a standalone U-Net .safetensors that carries its config and TrainingSpec, so load_unet needs no guess."""
    from safetensors.torch import save_file

    spec = spec or getattr(unet, "trained_as", None) or TrainingSpec()
    tensors = {key: value.detach().contiguous().cpu() for key, value in unet.state_dict().items()}
    save_file(tensors, os.fspath(path), metadata={METADATA_CONFIG: unet.config.to_json(), METADATA_TRAINING: spec.to_json()})
    return Path(path)


# ---- reading --------------------------------------------------------------------------------------


class _Weights:
    """Tensors of one source (files or a state dict) plus what the source says about itself."""

    def __init__(self, name, shapes, reader, metadata=None, unet_config=None, scheduler=None, vae=None):
        self.name, self.shapes, self._reader = name, shapes, reader
        self.metadata = metadata or {}
        self.unet_config, self.scheduler, self.vae = unet_config, scheduler, vae

    def read(self, key, dtype, device):
        return self._reader(key, dtype, device)

    def stored_config(self):
        """The config saved by save_unet, if any."""
        return self.stored(METADATA_CONFIG, lambda text: UNetConfig.from_dict(json.loads(text)), "a U-Net config")

    def stored(self, key, parse, what):
        """The metadata entry `key` parsed by `parse`; None if absent, a clear error naming the key if unreadable."""
        text = self.metadata.get(key)
        if not text:
            return None
        try:
            return parse(text)
        except (ValueError, TypeError, AttributeError) as error:  # JSONDecodeError is a ValueError
            raise UNetLoadError(f"{self.name}: metadata {key!r} is not {what} as JSON ({error})") from None

    def heads(self):
        """Attention heads from a diffusers config.json (weights do not show them), else None."""
        if not self.unet_config:
            return None
        return _diffusers_heads(self.unet_config)


def _open(source):
    if isinstance(source, Mapping):
        return _from_state_dict(source)
    path = Path(source)
    if path.is_dir():
        return _from_diffusers_folder(path)
    if not path.is_file():
        raise UNetLoadError(f"{path.name}: no such file or folder")
    suffix = path.suffix.lower()
    config_file = path.parent / "config.json"
    unet_config = _read_json(config_file) if config_file.is_file() and "diffusion_pytorch_model" in path.name else None
    if suffix in SAFETENSORS_SUFFIXES:
        return _from_safetensors([path], path.name, unet_config)
    if suffix in PICKLE_SUFFIXES:
        return _from_state_dict(read_state_dict(path), path.name, unet_config)
    raise UNetLoadError(f"{path.name}: unknown weight format {suffix!r}; expected one of "
                        f"{', '.join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)} or a diffusers folder")


def _from_state_dict(state_dict, name="state dict", unet_config=None):
    bad = [key for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise UNetLoadError(f"{name}: expected a dictionary of tensors, '{bad[0]}' is a {type(state_dict[bad[0]]).__name__}")

    def read(key, dtype, device):
        return state_dict[key].to(device=device, dtype=dtype)

    return _Weights(name, {k: tuple(v.shape) for k, v in state_dict.items()}, read, unet_config=unet_config)


def _from_safetensors(paths, name, unet_config=None, scheduler=None, vae=None):
    files = [SafetensorsFile(p) for p in paths]
    owner = {key: f for f in files for key in f.shapes}
    metadata = {k: v for f in files for k, v in f.metadata.items()}
    return _Weights(name, {key: f.shapes[key] for key, f in owner.items()},
                    lambda key, dtype, device: owner[key].read(key, dtype, device), metadata, unet_config, scheduler, vae)


def _from_diffusers_folder(path):
    folder = path / "unet" if (path / "unet").is_dir() else path
    weights = next((folder / n for n in DIFFUSERS_WEIGHTS if (folder / n).is_file()), None)
    if weights is None:
        raise UNetLoadError(f"{path.name}: a folder, but no diffusers U-Net in it: expected {folder.name}/"
                            f"{DIFFUSERS_WEIGHTS[0]} (or another of {', '.join(DIFFUSERS_WEIGHTS[1:])})")
    unet_config = _read_json(folder / "config.json") if (folder / "config.json").is_file() else None
    root = folder.parent
    scheduler = _read_json(root / "scheduler" / "scheduler_config.json") if folder.name == "unet" and (root / "scheduler" / "scheduler_config.json").is_file() else None
    vae = _read_json(root / "vae" / "config.json") if folder.name == "unet" and (root / "vae" / "config.json").is_file() else None
    name = f"{path.name}/{weights.relative_to(path)}" if weights.is_relative_to(path) else weights.name
    if weights.name.endswith(".index.json"):
        shards = sorted(set(_read_json(weights).get("weight_map", {}).values()))
        return _from_safetensors([folder / s for s in shards], name, unet_config, scheduler, vae)
    if weights.suffix == ".bin":
        opened = _from_state_dict(read_state_dict(weights), name, unet_config)
        opened.scheduler, opened.vae = scheduler, vae
        return opened
    return _from_safetensors([weights], name, unet_config, scheduler, vae)


def _read_json(path):
    path = Path(path)
    shown = f"{path.parent.name}/{path.name}"  # the file and its folder, never the server's directories
    try:
        return json.loads(path.read_text())
    except OSError as error:
        raise UNetLoadError(f"{shown}: cannot be read ({error.strerror or type(error).__name__})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UNetLoadError(f"{shown}: unreadable JSON ({error})") from None


# ---- checking -------------------------------------------------------------------------------------


def _key_map(detected, weights, template):
    """{our parameter name: key in the source}; `template`: a UNet of the detected config."""
    if detected.layout == "ldm":
        return {key: detected.prefix + key for key in template.state_dict()}
    adm = "class_embedding" if "class_embedding.linear_1.weight" in weights.shapes else "add_embedding"
    if weights.unet_config:
        _check_diffusers_options(weights.name, weights.unet_config)
    return diffusers_key_map(detected.config, adm)


def _check_complete(unet, detected, keys, weights):
    """Every parameter present with the right shape and nothing else in the U-Net's part of the file."""
    expected = {key: tuple(value.shape) for key, value in unet.state_dict().items()}
    missing = [theirs for ours, theirs in keys.items() if theirs not in weights.shapes]
    wrong = [f"{theirs} {weights.shapes[theirs]} (expected {expected[ours]})" for ours, theirs in keys.items()
             if theirs in weights.shapes and weights.shapes[theirs] != expected[ours]]
    used = set(keys.values())
    region = [key for key in weights.shapes if key.startswith(detected.prefix)] if detected.prefix else list(weights.shapes)
    unexpected = [key for key in region if key not in used and key not in ("v_pred", "ztsnr")]
    if missing or wrong or unexpected:
        family = detected.model_family.display_name
        problems = [f"{label} {len(items)}: {', '.join(items[:4])}{', ...' if len(items) > 4 else ''}"
                    for label, items in (("missing", missing), ("wrong shape", wrong), ("unexpected", unexpected)) if items]
        raise UNetLoadError(f"{weights.name}: does not match the {family} U-Net its shapes suggest "
                            f"({detected.layout} layout): {'; '.join(problems)}")


def _check_diffusers_options(name, config):
    for option, allowed in DIFFUSERS_SUPPORTED.items():
        value = config.get(option, allowed[0])
        value = tuple(value) if isinstance(value, list) else value
        if value not in allowed and not (isinstance(value, float) and any(
                isinstance(a, (int, float)) and math.isclose(value, a) for a in allowed)):
            raise UNetLoadError(f"{name}: diffusers option {option}={value!r} is not supported "
                                f"(this U-Net implements {' or '.join(repr(a) for a in allowed)})")


def _diffusers_heads(config):
    """num_heads / head_channels from diffusers' config (whose attention_head_dim means the number of heads)."""
    heads = config.get("num_attention_heads") or config.get("attention_head_dim") or 8
    widths = config.get("block_out_channels", [])
    heads = list(heads) if isinstance(heads, (list, tuple)) else [heads] * len(widths)
    if len(set(heads)) == 1:
        return {"num_heads": heads[0], "head_channels": -1}
    per_head = {w // h for w, h in zip(widths, heads)}
    if len(per_head) == 1 and all(w % h == 0 for w, h in zip(widths, heads)):
        return {"num_heads": -1, "head_channels": per_head.pop()}
    raise UNetLoadError(f"diffusers config: heads {heads} for widths {widths} are neither a fixed count nor a fixed width")


# ---- how it was trained ---------------------------------------------------------------------------


def _training(detected, weights, prediction, zero_snr):
    """The TrainingSpec: the family's, refined by what the source says, then by the caller's overrides."""
    spec = weights.stored(METADATA_TRAINING, TrainingSpec.from_json, "a training spec")
    if spec is None:
        spec = detected.model_family.training  # how its family was trained (networks.families)
        spec = _with(spec, **_evidence(detected, weights, explicit=prediction is not None))
    return _with(spec, prediction=prediction, zero_snr=zero_snr)


def _evidence(detected, weights, explicit):
    """What the checkpoint itself says about its training, as TrainingSpec fields."""
    found = {}
    marks = weights.metadata
    if weights.scheduler:
        found.update(_from_scheduler(weights.name, weights.scheduler))
    if weights.vae and "scaling_factor" in weights.vae:
        found["latent_scale"] = float(weights.vae["scaling_factor"])
    modelspec = str(marks.get("modelspec.prediction_type", "")).lower()
    if modelspec in MODELSPEC_PREDICTIONS:
        found["prediction"] = MODELSPEC_PREDICTIONS[modelspec]
    elif modelspec and not explicit:
        raise UNetLoadError(f"{weights.name}: metadata modelspec.prediction_type is {modelspec!r}; expected one of "
                            f"{', '.join(MODELSPEC_PREDICTIONS)} (or pass prediction=)")
    if "v_pred" in weights.shapes:  # the marker tensor some v-prediction SDXL checkpoints carry
        found["prediction"] = "v"
    if "ztsnr" in weights.shapes:  # ... and zero-terminal-SNR ones
        found["zero_snr"] = True
    if any(key in weights.shapes for key in ("edm_vpred.sigma_max", "edm_mean")) and not explicit:
        raise UNetLoadError(f"{weights.name}: an EDM-parameterised model (continuous sigma, e.g. CosXL or Playground "
                            "2.5), which this loader does not wrap; pass prediction= to load the network anyway")
    if (not found and detected.family == "sd2" and detected.config.in_channels == 4
            and detected.prefix + SD2_V_PROBE in weights.shapes):
        probe = weights.read(detected.prefix + SD2_V_PROBE, torch.float32, "cpu")
        if probe.std(unbiased=False) > SD2_V_THRESHOLD:
            found["prediction"] = "v"
    return found


def _from_scheduler(name, scheduler):
    """TrainingSpec fields from a diffusers scheduler_config.json."""
    if scheduler.get("trained_betas"):
        raise UNetLoadError(f"{name}: the scheduler lists trained_betas, which are not supported")
    found = {}
    if "prediction_type" in scheduler:
        if scheduler["prediction_type"] not in DIFFUSERS_PREDICTIONS:
            raise UNetLoadError(f"{name}: scheduler prediction_type {scheduler['prediction_type']!r}; expected one of "
                                f"{', '.join(DIFFUSERS_PREDICTIONS)}")
        found["prediction"] = DIFFUSERS_PREDICTIONS[scheduler["prediction_type"]]
    if "beta_schedule" in scheduler:
        if scheduler["beta_schedule"] not in DIFFUSERS_BETAS:
            raise UNetLoadError(f"{name}: scheduler beta_schedule {scheduler['beta_schedule']!r}; expected one of "
                                f"{', '.join(DIFFUSERS_BETAS)}")
        found["beta_schedule"] = DIFFUSERS_BETAS[scheduler["beta_schedule"]]
    for ours, theirs, kind in (("beta_start", "beta_start", float), ("beta_end", "beta_end", float),
                               ("timesteps", "num_train_timesteps", int)):
        if theirs in scheduler:
            found[ours] = kind(scheduler[theirs])
    if scheduler.get("rescale_betas_zero_snr"):
        found["zero_snr"] = True
    return found


def _with(spec, **changes):
    """The spec with the given (non-None) fields replaced; a ValueError if the result is inconsistent."""
    changes = {key: value for key, value in changes.items() if value is not None}
    return dataclasses.replace(spec, **changes)
