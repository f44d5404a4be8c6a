"""SDXL's extra conditioning (Podell et al. 2023, sec. 2.2): image size and crop as Fourier features.

SDXL was trained on images of many sizes and crops, and told each image's original size, its crop's
top-left corner and the target size. Each of the six numbers becomes a 256-wide sinusoidal embedding
(the transformer's position encoding, Vaswani et al. 2017); they follow bigG's pooled text embedding
in the U-Net's class vector y: 1280 + 6 x 256 = 2816 values.
"""
import math

import torch

FEATURES = 256
MAX_PERIOD = 10_000


def fourier_features(values, width=FEATURES, max_period=MAX_PERIOD):
    """[cos(v f_i), sin(v f_i)] for frequencies f_i = max_period^(-i / (width/2)), i = 0 .. width/2 - 1."""
    half = width // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    angles = torch.as_tensor(values, dtype=torch.float32).reshape(-1, 1) * frequencies
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def sdxl_vector(pooled, width, height, crop_w=0, crop_h=0, target_width=None, target_height=None):
    """SDXL's y (B, 2816): pooled bigG text (B, 1280), then original size, crop corner, target size, each (h, w)."""
    target_width = width if target_width is None else target_width
    target_height = height if target_height is None else target_height
    sizes = fourier_features([height, width, crop_h, crop_w, target_height, target_width]).reshape(1, -1)
    return torch.cat([pooled.float(), sizes.to(pooled.device).expand(len(pooled), -1)], dim=1)
