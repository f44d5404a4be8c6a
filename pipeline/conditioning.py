"""What the network is conditioned on: the text embedding and, for families that read one, the vector y built by the
family's own recipe (SDXL: pooled text + sizes and crop, Podell et al. 2023; refiner: + aesthetic score)."""
from collections.abc import Mapping

import torch

from ..networks.prediction import Cond

EMPTY_TEXT_TOKENS = 77  # CLIP's context length: the width of a text embedding when no prompt is given
SIZE_HINTS = ("crop_w", "crop_h", "target_width", "target_height", "aesthetic_score")


def condition(family, context: torch.Tensor | None, pooled: torch.Tensor | None = None, *,
              pixel_size: tuple[int, int], hints: Mapping | None = None, negative: bool = False) -> Cond:
    """Cond(context, y) for a network of this family; `hints` may give the vector's numbers (width, height, crop_w,
    crop_h, target_width, target_height, aesthetic_score), else the image's own (height, width) `pixel_size`."""
    if family.vector is None:
        return Cond(context)
    if pooled is None:
        raise ValueError(f"conditioning: this {family.display_name} U-Net needs the pooled text (pooled_output), which "
                         f"this conditioning does not carry; use a text encoder of its family")
    hints = dict(hints or {})
    height, width = hints.pop("height", pixel_size[0]), hints.pop("width", pixel_size[1])
    extra = {name: hints[name] for name in SIZE_HINTS if hints.get(name) is not None}
    return Cond(context, family.vector_condition(pooled, width=width, height=height, negative=negative, **extra))


def empty_condition(family, context_dim: int, *, pixel_size: tuple[int, int]) -> Cond:
    """The conditioning of no prompt at all: a zero text embedding (and zero pooled text where the family reads one)."""
    context = torch.zeros(1, EMPTY_TEXT_TOKENS, context_dim) if context_dim else None
    pooled = torch.zeros(1, family.pooled_width) if family.vector is not None else None
    return condition(family, context, pooled, pixel_size=pixel_size)
