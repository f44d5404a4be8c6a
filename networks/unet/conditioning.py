"""The SDXL refiner's vector condition: pooled text plus Fourier features of size, crop and aesthetic score.

SDXL base's vector (size, crop, target size) is networks.sdxl_conditioning.sdxl_vector; the refiner was
trained with an aesthetic score in place of the target size (Podell et al. 2023, sec. 2.5): 1280 + 5 x 256.
"""
import torch

from ..sdxl_conditioning import fourier_features

PROMPT_SCORE, NEGATIVE_SCORE = 6.0, 2.5  # the aesthetic scores the reference pipelines give prompt and negative


def refiner_vector(pooled, width, height, crop_w=0, crop_h=0, aesthetic_score=PROMPT_SCORE):
    """The refiner's y (B, 2560): pooled bigG text (B, 1280), then original size (h, w), crop corner (top, left), score."""
    features = fourier_features([height, width, crop_h, crop_w, aesthetic_score]).reshape(1, -1)
    return torch.cat([pooled.float(), features.to(pooled.device).expand(len(pooled), -1)], dim=1)
