"""Content hashes of tensors: one way to say "these very values" for part-way runs, fit memos and saved fits."""
import hashlib

import torch


def add_tensor(digest, tensor: torch.Tensor) -> None:
    """Feed a tensor's dtype, shape and bytes to a hashlib digest."""
    data = tensor.detach().cpu().contiguous()
    digest.update(f"{data.dtype}|{tuple(data.shape)}|".encode())
    digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")


def fingerprint(*tensors: torch.Tensor) -> str:
    """A short hash of tensors' values, dtypes and shapes."""
    digest = hashlib.blake2b(digest_size=16)
    for tensor in tensors:
        add_tensor(digest, torch.as_tensor(tensor))
    return digest.hexdigest()


def value_fingerprint(value) -> str:
    """A short hash of a nest of tensors, numbers, strings, lists, tuples, dicts and plain objects (by their type and
    attributes; functions by name): what a ComfyUI weight patch is made of."""
    digest = hashlib.blake2b(digest_size=16)
    _add_value(digest, value)
    return digest.hexdigest()


def _add_value(digest, value) -> None:
    if isinstance(value, torch.Tensor):
        add_tensor(digest, value)
    elif value is None or isinstance(value, (bool, int, float, str)):
        digest.update(f"{type(value).__name__}:{value!r}|".encode())
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__}[{len(value)}]|".encode())
        for item in value:
            _add_value(digest, item)
    elif isinstance(value, dict):
        digest.update(f"dict[{len(value)}]|".encode())
        for key in sorted(value, key=repr):
            _add_value(digest, key)
            _add_value(digest, value[key])
    elif hasattr(value, "__qualname__"):  # a function or a class: by name
        digest.update(f"named:{getattr(value, '__module__', '')}.{value.__qualname__}|".encode())
    else:
        digest.update(f"object:{type(value).__module__}.{type(value).__qualname__}|".encode())
        _add_value(digest, dict(vars(value)) if hasattr(value, "__dict__") else repr(value))
