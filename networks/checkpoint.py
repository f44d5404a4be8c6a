"""One-file checkpoints in Stable Diffusion's single-file layout: U-Net and text encoder side by side.

The U-Net goes under `model.diffusion_model.` (original key names) and the CLIP text tower under
`cond_stage_model.model.` in OpenCLIP's names (as SD2.x files hold theirs), so `load_unet` and
`load_text_encoder` read the file like any other checkpoint; the U-Net's config and training spec
ride in the metadata, so nothing is guessed.
"""
import os
import re
from pathlib import Path

from .text_encoder_loading import OPENCLIP_LAYOUT, renaming
from .unet_loading import METADATA_CONFIG, METADATA_TRAINING

UNET_PREFIX, TEXT_PREFIX = "model.diffusion_model.", "cond_stage_model.model."
TO_OPENCLIP = renaming(OPENCLIP_LAYOUT, reverse=True)


def openclip_name(key):
    """A text-tower parameter's OpenCLIP name."""
    for pattern, replacement in TO_OPENCLIP:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    raise ValueError(f"no OpenCLIP name for text-tower parameter {key!r}")


def save_checkpoint(path, unet, tower, spec, dtype=None, metadata=None):
    """Write U-Net + one CLIP text tower (ClipTextTransformer without projection) as one .safetensors file."""
    from safetensors.torch import save_file

    if tower.projection is not None:
        raise ValueError("save_checkpoint: towers with a pooled projection are not supported")

    def stored(value):
        value = value.detach().cpu()
        return (value.to(dtype) if dtype is not None and value.is_floating_point() else value).contiguous()

    tensors = {UNET_PREFIX + key: stored(value) for key, value in unet.state_dict().items()}
    tensors.update({TEXT_PREFIX + openclip_name(key): stored(value) for key, value in tower.state_dict().items()})
    info = {METADATA_CONFIG: unet.config.to_json(), METADATA_TRAINING: spec.to_json(), **(metadata or {})}
    save_file(tensors, os.fspath(path), metadata=info)
    return Path(path)
