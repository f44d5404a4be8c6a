"""Scenes to pixels with signed distance functions: every shape antialiased over one pixel, any batch, any device.

Coverage of a pixel is clamp(1/2 - d, 0, 1) for the signed distance d (pixels, negative inside) from the
pixel centre to the shape's outline; shapes are painted over the background in order.
"""
import math
from dataclasses import dataclass

import numpy as np
import torch

from .scenes import PALETTE, SHAPES, SIZE

SQUARE_HALF_SIDE = 0.8  # of the radius: a square about as heavy as a circle of that radius
TRIANGLE_CIRCUMRADIUS = 1.25
STAR_OUTER, STAR_INNER = 1.2, 0.45  # outer radius (of the radius) and inner radius (of the outer)
RING_INNER = 0.44  # inner radius of a ring (of its radius)


@dataclass
class SceneBatch:
    """Scenes as tensors: kind index (B, S; -1 for none), centre (B, S, 2), radius (B, S), colour (B, S, 3) and
    background (B, 3) in [0, 1]."""

    kind: torch.Tensor
    centre: torch.Tensor
    radius: torch.Tensor
    colour: torch.Tensor
    background: torch.Tensor

    def to(self, device):
        return SceneBatch(*(getattr(self, f).to(device) for f in FIELDS))

    def __getitem__(self, rows):
        """The scenes at these rows (an index tensor or a slice)."""
        return SceneBatch(*(getattr(self, f)[rows] for f in FIELDS))


FIELDS = ("kind", "centre", "radius", "colour", "background")


def pack_arrays(scenes, slots=2):
    """A SceneBatch's fields as numpy arrays (cheap to send between processes)."""
    count = len(scenes)
    kind = np.full((count, slots), -1, dtype=np.int64)
    centre, radius = np.zeros((count, slots, 2), np.float32), np.ones((count, slots), np.float32)
    colour = np.zeros((count, slots, 3), np.float32)
    background = np.array([PALETTE[s.background] for s in scenes], np.float32).reshape(count, 3) / 255
    for i, scene in enumerate(scenes):
        for j, shape in enumerate(scene.shapes):
            kind[i, j] = SHAPES.index(shape.kind)
            centre[i, j] = shape.x, shape.y
            radius[i, j] = shape.radius
            colour[i, j] = np.array(PALETTE[shape.colour], np.float32) / 255
    return kind, centre, radius, colour, background


def pack(scenes, slots=2):
    """A SceneBatch from Scene objects."""
    return SceneBatch(*(torch.from_numpy(a) for a in pack_arrays(scenes, slots)))


def render(batch, size=SIZE):
    """(B, 3, size, size) images in [-1, 1] (pixel-space diffusion's range) of a SceneBatch."""
    device = batch.background.device
    coords = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) * (SIZE / size)
    py, px = torch.meshgrid(coords, coords, indexing="ij")
    image = batch.background[:, :, None, None].expand(-1, -1, size, size)
    for slot in range(batch.kind.shape[1]):
        x = px - batch.centre[:, slot, 0, None, None]
        y = py - batch.centre[:, slot, 1, None, None]
        r = batch.radius[:, slot, None, None]
        distance = torch.full_like(x, float("inf"))
        for index, sdf in enumerate(SDFS):
            chosen = (batch.kind[:, slot] == index)[:, None, None]
            if chosen.any():
                distance = torch.where(chosen, sdf(x, y, r), distance)
        coverage = ((0.5 - distance * (size / SIZE)).clamp(0, 1))[:, None]
        image = image + coverage * (batch.colour[:, slot, :, None, None] - image)
    return image * 2 - 1


def circle(x, y, r):
    return torch.sqrt(x * x + y * y) - r


def square(x, y, r):
    return torch.maximum(x.abs(), y.abs()) - SQUARE_HALF_SIDE * r


def triangle(x, y, r):
    """Equilateral, pointing up: the largest signed distance to its three edge lines (exact inside)."""
    apothem = TRIANGLE_CIRCUMRADIUS * r * 0.5
    edges = [x * math.cos(a) + y * math.sin(a) for a in (math.pi / 2, math.pi * 7 / 6, -math.pi / 6)]
    return torch.stack(edges).amax(0) - apothem


def star(x, y, r):
    """Five points, one up: fold the angle into the sector between a tip and the next notch, then the distance
    to the edge from the tip (R, 0) to the notch (R_in cos 36, R_in sin 36), signed by its side."""
    outer = STAR_OUTER * r
    inner = STAR_INNER * outer
    angle = torch.atan2(x, -y)  # 0 at the top tip
    sector = 2 * math.pi / 5
    folded = (torch.remainder(angle + sector / 2, sector) - sector / 2).abs()
    rho = torch.sqrt(x * x + y * y)
    qx, qy = rho * torch.cos(folded), rho * torch.sin(folded)
    ax, bx, by = outer, inner * math.cos(sector / 2), inner * math.sin(sector / 2)
    ex, ey = bx - ax, by
    length = torch.sqrt(ex * ex + ey * ey)
    return ((qx - ax) * ey - qy * ex) / length  # cross product: positive away from the centre


def ring(x, y, r):
    middle, half_width = r * (1 + RING_INNER) / 2, r * (1 - RING_INNER) / 2
    return (torch.sqrt(x * x + y * y) - middle).abs() - half_width


SDFS = (circle, square, triangle, star, ring)  # in the order of scenes.SHAPES
