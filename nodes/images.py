"""Pictures at the node boundary: a PIL picture becomes ComfyUI's IMAGE."""
import numpy as np
import torch


def to_image_tensor(picture):
    """A PIL picture as ComfyUI's IMAGE: (1, H, W, 3) float32 in [0, 1]."""
    return torch.from_numpy(np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0)[None]
