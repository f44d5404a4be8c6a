"""Loading CLIP text encoders from the files people have: any key naming, any container, the family from shapes.

Files hold CLIP text towers under many names: single-file checkpoints (`cond_stage_model.transformer.*`
in SD1.x, `cond_stage_model.model.*` in SD2.x, `conditioner.embedders.N.*` in SDXL), standalone text
encoders (ComfyUI's `text_encoders`/`clip` folders: clip_l, clip_g, ...), Hugging Face names
(`text_model.encoder.layers.N.self_attn.q_proj`) and OpenCLIP names (`transformer.resblocks.N.attn.in_proj`).
Every tower is found by its token embedding, renamed to this pack's layout, and its architecture read
from its width; the family (sd1, sd2, sdxl, sdxl_refiner) follows from the towers found.
"""
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .clip_text import ARCHITECTURE_NAMES, ARCHITECTURES, ClipTextConfig, ClipTextTransformer
from .families import TEXT_CONDITIONINGS
from .text_encoder import TextEncoder
from .weights import SAFETENSORS_SUFFIXES, Device, PathLike, SafetensorsFile, WeightFileError, parse_dtype, read_state_dict

HF_MARK, OPENCLIP_MARK = "embeddings.token_embedding.weight", "token_embedding.weight"
# A diffusers pipeline folder keeps its text encoders in these subfolders, under one of these names.
DIFFUSERS_FOLDERS = ("text_encoder", "text_encoder_2", "")
DIFFUSERS_FILES = ("model.safetensors", "model.fp16.safetensors", "pytorch_model.bin", "pytorch_model.fp16.bin")
HEAD_WIDTH = 64  # all of CLIP's text towers use 64-wide attention heads

# (pattern, replacement) from each naming to this pack's; keys that match none are not part of the tower.
HF_NAMES = (
    (r"^embeddings\.token_embedding\.weight$", "token_embedding.weight"),
    (r"^embeddings\.position_embedding\.weight$", "position_embedding"),
    (r"^encoder\.layers\.(\d+)\.layer_norm1\.", r"blocks.\1.attn_norm."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.", r"blocks.\1.attn.\2."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"blocks.\1.attn.out."),
    (r"^encoder\.layers\.(\d+)\.layer_norm2\.", r"blocks.\1.mlp_norm."),
    (r"^encoder\.layers\.(\d+)\.mlp\.(fc[12])\.", r"blocks.\1.mlp.\2."),
    (r"^final_layer_norm\.", "final_norm."),
)
# OpenCLIP's names and this pack's, side by side ({n}: the layer; a trailing '.' names every tensor below it).
OPENCLIP_LAYOUT = (
    ("token_embedding.weight", "token_embedding.weight"),
    ("positional_embedding", "position_embedding"),
    ("transformer.resblocks.{n}.ln_1.", "blocks.{n}.attn_norm."),
    ("transformer.resblocks.{n}.attn.in_proj_weight", "blocks.{n}.attn.qkv.weight"),
    ("transformer.resblocks.{n}.attn.in_proj_bias", "blocks.{n}.attn.qkv.bias"),
    ("transformer.resblocks.{n}.attn.out_proj.", "blocks.{n}.attn.out."),
    ("transformer.resblocks.{n}.ln_2.", "blocks.{n}.mlp_norm."),
    ("transformer.resblocks.{n}.mlp.c_fc.", "blocks.{n}.mlp.fc1."),
    ("transformer.resblocks.{n}.mlp.c_proj.", "blocks.{n}.mlp.fc2."),
    ("ln_final.", "final_norm."),
)


def renaming(layout, reverse=False):
    """(pattern, replacement) rules from a (theirs, ours) name table; reverse=True renames ours to theirs."""
    rules = []
    for source, target in (((b, a) for a, b in layout) if reverse else layout):
        pattern = "^" + re.escape(source).replace(re.escape("{n}"), r"(\d+)") + ("" if source.endswith(".") else "$")
        rules.append((pattern, target.replace("{n}", r"\1")))
    return tuple(rules)


OPENCLIP_NAMES = renaming(OPENCLIP_LAYOUT)
# What a file holds when it holds no CLIP text tower: a hint for the error message.
OTHER_CONTENTS = (
    ("encoder.block.", "a T5 encoder"), ("model.diffusion_model.", "a diffusion model (U-Net)"),
    ("input_blocks.", "a U-Net"), ("double_blocks.", "a Flux transformer"), ("decoder.conv_in.", "a VAE"),
    ("vision_model.", "a CLIP vision tower"), ("visual.", "an OpenCLIP vision tower"), ("lora_", "a LoRA"),
)


Source = PathLike | Mapping[str, torch.Tensor]


def load_text_encoder(source: Source | Sequence[Source], family: str = "auto", dtype: torch.dtype | str = torch.float32,
                      device: Device = "cpu") -> TextEncoder:
    """A TextEncoder from a weight file, a diffusers folder, a state dict, or a list of them (clip_l + clip_g).

    family: 'auto' (from the towers found), or a key of families.TEXT_CONDITIONINGS to force it (e.g. for reduced-width
    models).
    dtype: a torch dtype or its name ('float16', 'fp16', 'bf16', ...: weights.parse_dtype).
    """
    dtype = parse_dtype(dtype)
    sources = source if isinstance(source, (list, tuple)) else [source]
    sources = [file for item in sources for file in (_folder_files(item) if _is_folder(item) else [item])]
    found = []
    for item in sources:
        name = Path(item).name if isinstance(item, (str, Path)) else "state dict"
        state_dict = _read_text_tensors(item, dtype) if isinstance(item, (str, Path)) else item
        towers = find_towers(state_dict, name)
        found += [(name, prefix, naming, state_dict) for prefix, naming in towers]
    if family not in ("auto", *TEXT_CONDITIONINGS):
        raise ValueError(f"family {family!r}: expected 'auto' or one of {', '.join(TEXT_CONDITIONINGS)}")
    converted = [(name, prefix, convert_tower(state_dict, prefix, naming)) for name, prefix, naming, state_dict in found]
    widths = [tower["token_embedding.weight"].shape[1] for _, _, tower in converted]
    chosen = TEXT_CONDITIONINGS[family if family != "auto" else _family_from_widths(widths, converted)]
    if len(chosen.towers) != len(converted):
        raise WeightFileError(f"{chosen.name} needs {len(chosen.towers)} text tower(s) "
                              f"({', '.join(ARCHITECTURE_NAMES[u.architecture] for u in chosen.towers)}); "
                              f"found {len(converted)}: {_listing(converted)}")
    towers = {}
    for use, (name, prefix, tower) in zip(chosen.towers, sorted(converted, key=lambda c: c[2]["token_embedding.weight"].shape[1])):
        config = tower_config(tower, use.architecture, f"{name} [{prefix or 'no prefix'}]")
        if chosen.pooled_from == use.name and chosen.unet_reads_pooled and not config.projection:
            raise WeightFileError(f"{name}: {chosen.name} needs the text projection of {ARCHITECTURE_NAMES[use.architecture]}, "
                                  f"which this file lacks")
        towers[use.name] = build_tower(config, tower, dtype, device, name)
    return TextEncoder(chosen, towers)


def _is_folder(item):
    return isinstance(item, (str, Path)) and Path(item).is_dir()


def _folder_files(folder):
    """The text encoder files of a diffusers pipeline folder (text_encoder/, text_encoder_2/) or of a model folder."""
    folder = Path(folder)
    files = []
    for sub in DIFFUSERS_FOLDERS:
        found = next((folder / sub / name for name in DIFFUSERS_FILES if (folder / sub / name).is_file()), None)
        if found is not None and (sub or not files):
            files.append(found)
    if not files:
        raise WeightFileError(f"{folder.name}: a folder, but no text encoder in it: expected "
                              f"{{text_encoder,text_encoder_2}}/{{{','.join(DIFFUSERS_FILES)}}}")
    return files


def _read_text_tensors(path, dtype):
    """The tensors of the text towers only, in `dtype`: a checkpoint's U-Net and VAE are never read (safetensors)."""
    path = Path(path)
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES or not path.is_file():
        return read_state_dict(path)
    weights = SafetensorsFile(path)
    prefixes = [prefix for prefix, _ in find_towers(weights.shapes, path.name)]
    wanted = [key for key in weights.shapes if any(key.startswith(_tower_root(p)) for p in prefixes)]
    return weights.read_all(wanted, dtype=dtype)


def find_towers(state_dict, name="state dict"):
    """[(prefix, 'hf' | 'openclip')] of every CLIP text tower in the keys; a clear error when there is none."""
    towers = []
    for key in state_dict:
        if key.endswith(HF_MARK):
            towers.append((key[: -len(HF_MARK)], "hf"))
        elif key.endswith(OPENCLIP_MARK) and f"{key[: -len(OPENCLIP_MARK)]}transformer.resblocks.0.ln_1.weight" in state_dict:
            towers.append((key[: -len(OPENCLIP_MARK)], "openclip"))
    if not towers:
        hints = sorted({hint for mark, hint in OTHER_CONTENTS if any(mark in key for key in state_dict)})
        holds = f"; it seems to hold {', '.join(hints)}" if hints else ""
        sample = ", ".join(list(state_dict)[:3]) or "no tensors"
        raise WeightFileError(f"{name}: no CLIP text encoder found (no '*{HF_MARK}' or OpenCLIP "
                              f"'*{OPENCLIP_MARK}' keys){holds}; first keys: {sample}")
    return sorted(towers)


def _tower_root(prefix):
    """Where a tower's keys live: HF keeps text_projection beside text_model., so one level up."""
    return prefix[: -len("text_model.")] if prefix.endswith("text_model.") else prefix


def convert_tower(state_dict, prefix, naming):
    """The tower's tensors under this pack's names (q, k, v fused; OpenCLIP's projection transposed)."""
    rules = HF_NAMES if naming == "hf" else OPENCLIP_NAMES
    tower = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        for pattern, replacement in rules:
            renamed, count = re.subn(pattern, replacement, key[len(prefix):])
            if count:
                tower[renamed] = value
                break
    if naming == "hf":
        for layer in sorted({int(k.split(".")[1]) for k in tower if ".attn.q." in k}):
            for kind in ("weight", "bias"):
                parts = [tower.pop(f"blocks.{layer}.attn.{p}.{kind}", None) for p in "qkv"]
                if all(p is not None for p in parts):
                    tower[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat(parts)
        projection = state_dict.get(_tower_root(prefix) + "text_projection.weight")
    else:
        projection = state_dict.get(prefix + "text_projection")
        projection = projection.T if projection is not None else None
    if projection is not None:
        tower["projection.weight"] = projection
    if "position_embedding" in tower:
        tower["position_embedding"] = tower["position_embedding"].reshape(-1, tower["position_embedding"].shape[-1])
    return tower


def hf_source(key, width):
    """Where a tensor of a Hugging Face CLIP text model (`text_model.*`, `text_projection.weight`) lives in this pack's
    tower: (name, rows), rows the (start, length) of q, k or v in the fused projection (None: the whole tensor); None
    for a key that is no part of the tower."""
    if key == "text_projection.weight":
        return "projection.weight", None
    inner = key[len("text_model."):] if key.startswith("text_model.") else None
    renamed = next((re.sub(p, r, inner) for p, r in HF_NAMES if inner is not None and re.search(p, inner)), None)
    part = re.fullmatch(r"blocks\.(\d+)\.attn\.([qkv])\.(weight|bias)", renamed or "")
    if part:
        return f"blocks.{part[1]}.attn.qkv.{part[3]}", ("qkv".index(part[2]) * width, width)
    return (renamed, None) if renamed is not None else None


def tower_config(tower, architecture, where):
    """The tower's ClipTextConfig read from its shapes; activation and head count from its architecture."""
    try:
        vocabulary, width = tower["token_embedding.weight"].shape
        positions = tower["position_embedding"].shape[0]
        layers = 1 + max(int(k.split(".")[1]) for k in tower if k.startswith("blocks."))
        mlp_width = tower["blocks.0.mlp.fc1.weight"].shape[0]
    except (KeyError, ValueError) as error:
        raise WeightFileError(f"{where}: incomplete CLIP text tower (missing {error})") from None
    reference = ARCHITECTURES[architecture]
    known = _architecture_of(width)
    if known in ARCHITECTURES and known != architecture:
        raise WeightFileError(f"{where}: a {ARCHITECTURE_NAMES[known]} tower ({width} wide) where "
                              f"{ARCHITECTURE_NAMES[architecture]} ({reference.width} wide) is needed")
    heads = reference.heads if width == reference.width else width // HEAD_WIDTH
    if width % HEAD_WIDTH:
        raise WeightFileError(f"{where}: width {width} is not a whole number of {HEAD_WIDTH}-wide attention heads")
    projection = tower["projection.weight"].shape[0] if "projection.weight" in tower else 0
    return ClipTextConfig(width=width, layers=layers, heads=heads, mlp_width=mlp_width, activation=reference.activation,
                          projection=projection, positions=positions, vocabulary=vocabulary)


def build_tower(config, tensors, dtype, device, where):
    """A ClipTextTransformer holding the tensors (no random initialisation: built on the meta device)."""
    with torch.device("meta"):
        tower = ClipTextTransformer(config)
    expected = {k: tuple(v.shape) for k, v in tower.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    wrong = [f"{k} {tuple(tensors[k].shape)} (expected {expected[k]})" for k in expected
             if k in tensors and tuple(tensors[k].shape) != expected[k]]
    if missing or wrong:
        shown = (missing[:5] + (["..."] if len(missing) > 5 else [])) + wrong[:5]
        raise WeightFileError(f"{where}: not a complete CLIP text tower ({len(missing)} missing, {len(wrong)} misshapen): "
                              + "; ".join(shown))
    tensors = {k: tensors[k].to(device=device, dtype=dtype) for k in expected}
    tower.load_state_dict(tensors, assign=True)
    return tower.eval().requires_grad_(False)


def _family_from_widths(widths, converted):
    architectures = sorted(_architecture_of(width) for width in widths)
    for name, family in TEXT_CONDITIONINGS.items():
        if sorted(u.architecture for u in family.towers) == architectures:
            return name
    raise WeightFileError(f"found {_listing(converted)}: no model family this pack knows uses these text towers "
                          f"(choose the family by hand for reduced or unusual models)")


def _architecture_of(width):
    for name, config in ARCHITECTURES.items():
        if config.width == width:
            return name
    return f"an unknown {width}-wide tower"


def _listing(converted):
    described = []
    for name, prefix, tower in converted:
        architecture = _architecture_of(tower["token_embedding.weight"].shape[1])
        described.append(f"{ARCHITECTURE_NAMES.get(architecture, architecture)} in {name} [{prefix or 'no prefix'}]")
    return ", ".join(described)
