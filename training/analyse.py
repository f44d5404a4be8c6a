"""A deterministic judge of generated shape images: background colour, each shape's colour, class and place.

Background: the median of the border pixels, named by the nearest palette colour. Shapes: connected regions
of pixels that differ from the background, largest first; colour by the median of each region's pixels;
class from three numbers of its mask: holes (ring), solidity = area / convex-hull area (star), and
extent = area / bounding-box area (square 1, circle pi/4, triangle 1/2). Positions from region centroids.
"""
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from .scenes import PALETTE, SIZE

NAMES = tuple(PALETTE)
RGB = np.array([PALETTE[name] for name in NAMES], dtype=np.float64)
FOREGROUND_DISTANCE = 40.0  # RGB distance from the background that makes a pixel part of a shape
MIN_AREA = 10  # pixels; smaller regions are specks
RING_HOLE, STAR_SOLIDITY, SQUARE_EXTENT, CIRCLE_EXTENT = 0.06, 0.78, 0.88, 0.64
THIRDS = (SIZE * 23 / 64, SIZE * 41 / 64)  # column / row boundaries for position words
RELATION_MARGIN = 4.0  # pixels the centres must differ by along the relation's axis


@dataclass(frozen=True)
class Region:
    """One shape found in an image."""

    colour: str
    kind: str
    x: float
    y: float
    area: int


def nearest_colour(rgb):
    return NAMES[int(np.argmin(((RGB - np.asarray(rgb, dtype=np.float64)) ** 2).sum(axis=1)))]


def analyse(image):
    """(background name, [Region] largest first) of an (H, W, 3) uint8 image."""
    pixels = image.astype(np.float64)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background_rgb = np.median(border, axis=0)
    foreground = np.sqrt(((pixels - background_rgb) ** 2).sum(axis=-1)) > FOREGROUND_DISTANCE
    labels, count = ndimage.label(foreground, structure=np.ones((3, 3)))
    regions = []
    for index in range(1, count + 1):
        mask = labels == index
        area = int(mask.sum())
        if area < MIN_AREA:
            continue
        ys, xs = np.nonzero(mask)
        colour = nearest_colour(np.median(pixels[mask], axis=0))
        regions.append(Region(colour, classify(mask), float(xs.mean() + 0.5), float(ys.mean() + 0.5), area))
    regions.sort(key=lambda r: -r.area)
    return nearest_colour(background_rgb), regions


def classify(mask):
    """The shape class of one region's mask."""
    filled = ndimage.binary_fill_holes(mask)
    area = filled.sum()
    if (filled & ~mask).sum() > RING_HOLE * area:
        return "ring"
    if area / hull_area(filled) < STAR_SOLIDITY:
        return "star"
    ys, xs = np.nonzero(filled)
    extent = area / ((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1))
    if extent > SQUARE_EXTENT:
        return "square"
    return "circle" if extent > CIRCLE_EXTENT else "triangle"


def hull_area(mask):
    """Area of the convex hull of the mask's pixels, each pixel a unit square."""
    ys, xs = np.nonzero(mask)
    corners = np.concatenate([np.stack([xs + dx, ys + dy], axis=1) for dx in (0, 1) for dy in (0, 1)])
    try:
        return ConvexHull(corners).volume
    except QhullError:  # a line of pixels
        return float(len(xs))


def position_of(region):
    """(column, row) words of a region's centre."""
    column = "left" if region.x < THIRDS[0] else "right" if region.x > THIRDS[1] else "center"
    row = "top" if region.y < THIRDS[0] else "bottom" if region.y > THIRDS[1] else "middle"
    return column, row


def relation_holds(a, b, relation):
    """Whether region a is `relation` region b (centres at least RELATION_MARGIN apart along the axis)."""
    dx, dy = b.x - a.x, b.y - a.y
    return {"left of": dx > RELATION_MARGIN, "right of": -dx > RELATION_MARGIN,
            "above": dy > RELATION_MARGIN, "below": -dy > RELATION_MARGIN}[relation]


def score(scene, image):
    """{check: [passed, ...]} of one image against what its scene's caption asks for: background, colour and
    shape per object, position (when the caption names one), relation (two-object captions)."""
    background, regions = analyse(image)
    wanted = scene.shapes
    found = match(wanted, regions[: len(wanted)])
    result = {"background": [background == scene.background],
              "colour": [r is not None and r.colour == s.colour for s, r in zip(wanted, found)],
              "shape": [r is not None and r.kind == s.kind for s, r in zip(wanted, found)]}
    if scene.position is not None:
        result["position"] = [found[0] is not None and position_of(found[0]) == scene.position]
    if scene.relation is not None:
        a, b = found
        result["relation"] = [a is not None and b is not None and a.colour == wanted[0].colour
                              and b.colour == wanted[1].colour and relation_holds(a, b, scene.relation)]
    return result


def match(wanted, regions):
    """The regions assigned to the wanted shapes (None where missing): the order agreeing best on colour, then kind."""
    padded = list(regions) + [None] * (len(wanted) - len(regions))
    orders = [padded] if len(wanted) == 1 else [padded, padded[::-1]]

    def agreement(order):
        return sum(2 * (r is not None and r.colour == s.colour) + (r is not None and r.kind == s.kind)
                   for s, r in zip(wanted, order))

    return max(orders, key=agreement)
