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
