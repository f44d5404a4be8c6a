"""SDXL's vector condition y (Podell et al. 2023, sec. 2.2 and 2.5): pooled text plus Fourier features of numbers.

SDXL was trained on images of many sizes and crops, and told each image's original size, its crop's
top-left corner and the target size. Each of the six numbers becomes a 256-wide sinusoidal embedding
(the transformer's position encoding, Vaswani et al. 2017); they follow bigG's pooled text embedding
in the U-Net's class vector y: 1280 + 6 x 256 = 2816 values. The refiner was trained with an aesthetic
score in place of the target size: 1280 + 5 x 256 = 2560.
"""
import math
from dataclasses import dataclass

import torch

FEATURES = 256
MAX_PERIOD = 10_000
PROMPT_SCORE, NEGATIVE_SCORE = 6.0, 2.5  # the aesthetic scores the reference pipelines give prompt and negative


def fourier_features(values, width=FEATURES, max_period=MAX_PERIOD):
    """[cos(v f_i), sin(v f_i)] for frequencies f_i = max_period^(-i / (width/2)), i = 0 .. width/2 - 1."""
    half = width // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    angles = torch.as_tensor(values, dtype=torch.float32).reshape(-1, 1) * frequencies
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


@dataclass(frozen=True)
class VectorRecipe:
    """A U-Net's vector condition y: the pooled text (pooled_width wide), then the Fourier features of each of
    `numbers` in turn (names among height, width, crop_h, crop_w, target_height, target_width, aesthetic_score)."""

    name: str
    pooled_width: int
    numbers: tuple

    @property
    def width(self):
        """The width of y, the U-Net's adm_in_channels."""
        return self.pooled_width + FEATURES * len(self.numbers)

    def __call__(self, pooled, *, width, height, crop_w=0, crop_h=0, target_width=None, target_height=None,
                 aesthetic_score=None, negative=False):
        """y (B, width) for pooled text (B, P); the target size defaults to the size, the aesthetic score to the
        reference pipelines' (6.0 for prompts, 2.5 for negatives); numbers the recipe does not read are ignored."""
        values = dict(height=height, width=width, crop_h=crop_h, crop_w=crop_w,
                      target_height=height if target_height is None else target_height,
                      target_width=width if target_width is None else target_width,
                      aesthetic_score=(NEGATIVE_SCORE if negative else PROMPT_SCORE) if aesthetic_score is None
                      else aesthetic_score)
        features = fourier_features([values[name] for name in self.numbers]).reshape(1, -1)
        return torch.cat([pooled.float(), features.to(pooled.device).expand(len(pooled), -1)], dim=1)


@dataclass(frozen=True)
class UnknownVector:
    """A vector condition of a width no recipe here makes (a custom U-Net's): building it raises."""

    width: int
    name: str = "unknown"
    pooled_width: int = 0

    def __call__(self, pooled, **numbers):
        raise ValueError(f"conditioning: no recipe for a vector condition of width {self.width} (this package builds "
                         f"{' and '.join(f'{r.width} ({r.name})' for r in RECIPES)})")


SDXL_VECTOR = VectorRecipe("sdxl", 1280, ("height", "width", "crop_h", "crop_w", "target_height", "target_width"))
REFINER_VECTOR = VectorRecipe("sdxl_refiner", 1280, ("height", "width", "crop_h", "crop_w", "aesthetic_score"))
RECIPES = (SDXL_VECTOR, REFINER_VECTOR)


def recipe_for_width(width):
    """The recipe of a vector condition this wide: None for 0 (no vector), UnknownVector for a width no recipe makes."""
    if not width:
        return None
    return next((recipe for recipe in RECIPES if recipe.width == width), None) or UnknownVector(width)


def sdxl_vector(pooled, width, height, crop_w=0, crop_h=0, target_width=None, target_height=None):
    """SDXL's y (B, 2816): pooled bigG text (B, 1280), then original size, crop corner, target size, each (h, w)."""
    return SDXL_VECTOR(pooled, width=width, height=height, crop_w=crop_w, crop_h=crop_h, target_width=target_width,
                       target_height=target_height)


def refiner_vector(pooled, width, height, crop_w=0, crop_h=0, aesthetic_score=PROMPT_SCORE):
    """The refiner's y (B, 2560): pooled bigG text (B, 1280), then original size (h, w), crop corner (top, left), score."""
    return REFINER_VECTOR(pooled, width=width, height=height, crop_w=crop_w, crop_h=crop_h,
                          aesthetic_score=aesthetic_score)
