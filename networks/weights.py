"""Reading weight files safely: .safetensors preferred, .ckpt/.pt only through torch.load(weights_only=True)."""
import os
from pathlib import Path

import torch

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


class WeightFileError(ValueError):
    """A weight file that cannot be read, or that holds something other than what was expected."""


def read_state_dict(path, device="cpu"):
    """All tensors of a weight file as {key: tensor}; a clear WeightFileError for anything unreadable."""
    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _read_safetensors(path, device)
    if suffix in PICKLE_SUFFIXES:
        return _read_pickle(path, device)
    raise WeightFileError(f"{path.name}: unknown weight format {suffix!r}; expected one of "
                          f"{', '.join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)}")


def _read_safetensors(path, device):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(os.fspath(path), device=str(device))
    except (SafetensorError, OSError, RuntimeError) as error:
        raise WeightFileError(f"{path.name}: not a readable .safetensors file (truncated or corrupt?): {error}") from None


def _read_pickle(path, device):
    try:
        data = torch.load(os.fspath(path), map_location=device, weights_only=True)
    except Exception as error:  # torch.load raises many kinds for a bad or unsafe file
        raise WeightFileError(f"{path.name}: not a readable checkpoint (only plain tensors are loaded): {error}") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightFileError(f"{path.name}: expected a dictionary of tensors, found {type(data).__name__}")
    return data


def strip_prefix(state_dict, prefix):
    """The entries under `prefix`, with the prefix removed."""
    return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
