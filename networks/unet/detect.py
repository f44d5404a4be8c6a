"""Which U-Net a state dict holds, read from tensor shapes and key counts alone (never from file names)."""
import re
from dataclasses import dataclass

import torch

from ..families import FAMILIES, family_for, published_family
from .config import UNetConfig
from .model import UNet

CHECKPOINT_PREFIX = "model.diffusion_model."  # the U-Net inside a single-file SD checkpoint
LDM_MARKER = "input_blocks.0.0.weight"
DIFFUSERS_MARKER = "conv_in.weight"

# What other weight files look like, to say what was found instead of a U-Net.
LOOKALIKES = (
    ("first_stage_model.", "the VAE of a checkpoint without its U-Net"),
    ("encoder.down.", "a VAE"),
    ("decoder.up.", "a VAE"),
    ("text_model.", "a CLIP text encoder"),
    ("cond_stage_model.", "a text encoder"),
    ("conditioner.embedders.", "SDXL text encoders"),
    ("lora_unet_", "a LoRA"),
    ("lora_", "a LoRA"),
    ("double_blocks.", "a Flux transformer (not a U-Net)"),
    ("joint_blocks.", "an SD3 MMDiT transformer (not a U-Net)"),
    ("transformer_blocks.", "a diffusion transformer (not a U-Net)"),
)


class UnknownArchitectureError(ValueError):
    """A state dict that is not a U-Net this package can build, with what was found and what was expected."""


@dataclass(frozen=True)
class Detected:
    """What a state dict holds: the family name (a key of networks.families.FAMILIES, or "custom"), the structure,
    the layout, the key prefix."""

    family: str
    config: UNetConfig
    layout: str  # "ldm" (the original checkpoints' key names) or "diffusers"
    prefix: str

    @property
    def model_family(self):
        """The ModelFamily record: the published family's, or a custom one built from the config."""
        return FAMILIES.get(self.family) or family_for(self.config)


def detect_unet(shapes, config=None, heads=None):
    """Detect the U-Net in {key: shape or tensor}; `config` forces the structure, `heads` gives the heads of a
    custom one (dict with num_heads / head_channels). Raises UnknownArchitectureError naming what was found."""
    shapes = {key: tuple(value.shape) if hasattr(value, "shape") else tuple(value) for key, value in shapes.items()}
    layout, prefix = find_layout(shapes)
    inner = {key[len(prefix):]: shape for key, shape in shapes.items() if key.startswith(prefix)}
    structure = ldm_structure(inner) if layout == "ldm" else diffusers_structure(inner)
    family = identify(structure)
    name = family.name if family is not None else "custom"
    if config is not None:
        return Detected(name, config, layout, prefix)
    if family is not None:
        heads = {"num_heads": family.unet.num_heads, "head_channels": family.unet.head_channels}
    elif heads is None:
        raise UnknownArchitectureError(
            f"unknown U-Net architecture: {describe(structure)}; expected one of "
            f"{', '.join(f'{f.display_name} ({describe(f.unet.to_dict())})' for f in FAMILIES.values() if f.unet)}. "
            "Its attention heads cannot be read from the weights: pass config=UNetConfig(...) to load it")
    try:
        return Detected(name, UNetConfig(**structure, **heads), layout, prefix)
    except ValueError as error:
        raise UnknownArchitectureError(f"unsupported U-Net architecture ({describe(structure)}): {error}") from None


def find_layout(shapes):
    """('ldm' | 'diffusers', key prefix) of the U-Net in the state dict, or an error naming what it holds."""
    if CHECKPOINT_PREFIX + LDM_MARKER in shapes:
        return "ldm", CHECKPOINT_PREFIX
    if LDM_MARKER in shapes:
        return "ldm", ""
    if DIFFUSERS_MARKER in shapes and any(key.startswith("down_blocks.") for key in shapes):
        return "diffusers", ""
    raise UnknownArchitectureError(f"not a U-Net: {what_is(shapes)}; expected the U-Net of a Stable Diffusion "
                                   f"checkpoint ('{CHECKPOINT_PREFIX}{LDM_MARKER}'), a standalone U-Net "
                                   f"('{LDM_MARKER}') or a diffusers U-Net ('{DIFFUSERS_MARKER}', 'down_blocks.*')")


def what_is(shapes):
    """A short description of a state dict that holds no U-Net."""
    if not shapes:
        return "it holds no tensors"
    for marker, name in LOOKALIKES:
        if any(key.startswith(marker) or f".{marker}" in key for key in shapes):
            return f"it looks like {name} ({len(shapes)} tensors, e.g. '{_first(shapes, marker)}')"
    tops = sorted({key.split(".")[0] for key in shapes})
    return f"found {len(shapes)} tensors under {', '.join(repr(t) for t in tops[:6])}{', ...' if len(tops) > 6 else ''}"


def _first(shapes, marker):
    return next(key for key in shapes if key.startswith(marker) or f".{marker}" in key)


def identify(structure):
    """The published ModelFamily whose architecture this is (channels in/out may differ, e.g. inpainting), else None."""
    return published_family(structure)


def describe(structure):
    """A one-line summary of an architecture for error messages."""
    depth = structure["transformer_depth"]
    return (f"{structure['model_channels']} channels x {tuple(structure['channel_mult'])}, "
            f"{tuple(structure['num_res_blocks'])} res blocks, attention depths {tuple(depth)}, "
            f"text width {structure['context_dim']}, vector condition {structure['adm_in_channels'] or 'none'}")


def count_indices(shapes, prefix):
    """How many consecutive numbered children `prefix{i}.` exist (0, 1, 2, ...)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for key in shapes if (m := pattern.match(key))}
    count = 0
    while count in found:
        count += 1
    return count


def ldm_structure(shapes):
    """Architecture fields (all but the heads) of a U-Net in the original checkpoints' key layout."""
    need = _needer(shapes, "U-Net")
    model_channels, in_channels = need(LDM_MARKER)[:2]
    out_channels = need("out.2.weight")[0]
    widths, blocks, depths = [], [0], []
    for index in range(1, count_indices(shapes, "input_blocks.")):
        block = f"input_blocks.{index}."
        if block + "0.op.weight" in shapes:
            blocks.append(0)
        elif block + "0.in_layers.0.weight" in shapes:
            width = need(block + "0.out_layers.3.weight")[0]
            if blocks[-1] == 0:
                widths.append(width)
            elif width != widths[-1]:
                raise UnknownArchitectureError(f"U-Net: {block[:-1]} has {width} channels, its level {widths[-1]}")
            blocks[-1] += 1
            depths.append(count_indices(shapes, block + "1.transformer_blocks."))
        else:
            raise UnknownArchitectureError(f"U-Net: {block[:-1]} is neither a residual block nor a downsampling step")
    output_depths = [count_indices(shapes, f"output_blocks.{i}.1.transformer_blocks.")
                     for i in range(count_indices(shapes, "output_blocks."))]
    return _structure(shapes, in_channels, out_channels, model_channels, widths, blocks, depths, output_depths,
                      middle=_middle(count_indices(shapes, "middle_block.1.transformer_blocks."),
                                     "middle_block.1.in_layers.0.weight" in shapes), adm_key="label_emb.0.0.weight")


def diffusers_structure(shapes):
    """Architecture fields (all but the heads) of a U-Net in diffusers' key layout."""
    need = _needer(shapes, "diffusers U-Net")
    model_channels, in_channels = need(DIFFUSERS_MARKER)[:2]
    out_channels = need("conv_out.weight")[0]
    levels = count_indices(shapes, "down_blocks.")
    widths, blocks, depths, output_depths = [], [], [], []
    for level in range(levels):
        blocks.append(count_indices(shapes, f"down_blocks.{level}.resnets."))
        widths.append(need(f"down_blocks.{level}.resnets.0.conv1.weight")[0])
        depths += [count_indices(shapes, f"down_blocks.{level}.attentions.{j}.transformer_blocks.")
                   for j in range(blocks[-1])]
    for level in range(count_indices(shapes, "up_blocks.")):
        output_depths += [count_indices(shapes, f"up_blocks.{level}.attentions.{j}.transformer_blocks.")
                          for j in range(count_indices(shapes, f"up_blocks.{level}.resnets."))]
    adm_key = "class_embedding.linear_1.weight" if "class_embedding.linear_1.weight" in shapes else "add_embedding.linear_1.weight"
    return _structure(shapes, in_channels, out_channels, model_channels, widths, blocks, depths, output_depths,
                      middle=_middle(count_indices(shapes, "mid_block.attentions.0.transformer_blocks."),
                                     count_indices(shapes, "mid_block.resnets.") > 1), adm_key=adm_key)


def _middle(depth, second_residual_block):
    """transformer_depth_middle: the transformer's depth, else 0 (two residual blocks) or -1 (one alone)."""
    return depth if depth or second_residual_block else -1


def _structure(shapes, in_channels, out_channels, model_channels, widths, blocks, depths, output_depths, middle, adm_key):
    mults = [width // model_channels for width in widths]
    if any(width % model_channels for width in widths) or len(widths) != len(blocks):
        raise UnknownArchitectureError(f"U-Net: level widths {widths} are not multiples of {model_channels} channels")
    to_k = next((key for key in sorted(shapes) if key.endswith("attn2.to_k.weight")), None)
    proj_in = next((key for key in sorted(shapes) if key.endswith("proj_in.weight")), None)
    return dict(in_channels=in_channels, out_channels=out_channels, model_channels=model_channels,
                channel_mult=tuple(mults), num_res_blocks=tuple(blocks), transformer_depth=tuple(depths),
                transformer_depth_output=tuple(output_depths), transformer_depth_middle=middle,
                context_dim=shapes[to_k][1] if to_k else 0,
                linear_projection=bool(proj_in) and len(shapes[proj_in]) == 2,
                adm_in_channels=shapes[adm_key][1] if adm_key in shapes else 0)


def _needer(shapes, what):
    def need(key):
        if key not in shapes:
            raise UnknownArchitectureError(f"{what}: '{key}' is missing (a truncated or partial state dict?)")
        return shapes[key]
    return need


def diffusers_key_map(config, adm="add_embedding"):
    """{original key: diffusers key} for every parameter of a U-Net of this config (`adm`: diffusers' name of the
    vector-condition embedding, `add_embedding` for SDXL, `class_embedding` for SD2 unCLIP)."""
    with torch.device("meta"):
        keys = list(UNet(config).state_dict())
    prefixes = _block_prefixes(config, adm)
    ordered = sorted(prefixes, key=len, reverse=True)
    mapping = {}
    for key in keys:
        ours = next(p for p in ordered if key.startswith(p))
        theirs, rest = prefixes[ours], key[len(ours):]
        if ".resnets." in theirs:
            rest = next((RESNET_NAMES[p] + rest[len(p):] for p in RESNET_NAMES if rest.startswith(p)), rest)
        mapping[key] = theirs + rest
    return mapping


# Residual-block parameters: original name -> diffusers name.
RESNET_NAMES = {"in_layers.0.": "norm1.", "in_layers.2.": "conv1.", "emb_layers.1.": "time_emb_proj.",
                "out_layers.0.": "norm2.", "out_layers.3.": "conv2.", "skip_connection.": "conv_shortcut."}


def _block_prefixes(config, adm):
    """Original block prefix -> diffusers block prefix (sub-keys of transformers keep their names)."""
    c = config
    pairs = {"input_blocks.0.0.": "conv_in.", "time_embed.0.": "time_embedding.linear_1.",
             "time_embed.2.": "time_embedding.linear_2.", "label_emb.0.0.": f"{adm}.linear_1.",
             "label_emb.0.2.": f"{adm}.linear_2.", "out.0.": "conv_norm_out.", "out.2.": "conv_out."}
    index, levels = 1, len(c.channel_mult)
    for level, blocks in enumerate(c.num_res_blocks):
        for j in range(blocks):
            pairs[f"input_blocks.{index}.0."] = f"down_blocks.{level}.resnets.{j}."
            pairs[f"input_blocks.{index}.1."] = f"down_blocks.{level}.attentions.{j}."
            index += 1
        if level < levels - 1:
            pairs[f"input_blocks.{index}.0.op."] = f"down_blocks.{level}.downsamplers.0.conv."
            index += 1
    pairs["middle_block.0."] = "mid_block.resnets.0."
    if c.transformer_depth_middle > 0:
        pairs["middle_block.1."] = "mid_block.attentions.0."
        pairs["middle_block.2."] = "mid_block.resnets.1."
    elif c.transformer_depth_middle == 0:
        pairs["middle_block.1."] = "mid_block.resnets.1."
    index = 0
    for up, level in enumerate(reversed(range(levels))):
        for j in range(c.num_res_blocks[level] + 1):
            attention = c.transformer_depth_output[index] > 0
            pairs[f"output_blocks.{index}.0."] = f"up_blocks.{up}.resnets.{j}."
            if attention:
                pairs[f"output_blocks.{index}.1."] = f"up_blocks.{up}.attentions.{j}."
            if level > 0 and j == c.num_res_blocks[level]:
                pairs[f"output_blocks.{index}.{2 if attention else 1}.conv."] = f"up_blocks.{up}.upsamplers.0.conv."
            index += 1
    return pairs
