"""Scenes of simple shapes and their captions, drawn deterministically from a seed.

A scene is a background colour and one shape (with optional size and position words) or two shapes in a
spatial relation ("a red circle left of a blue square"). Captions come from a small grammar with synonyms.
Some combinations (colour, shape, background; or colour, shape, relation, colour, shape) are held out:
training never sees them, the adherence benchmark asks for them.
"""
import random
import zlib
from dataclasses import dataclass

SIZE = 64  # pixels per side
PALETTE = {
    "red": (220, 40, 40), "orange": (250, 140, 20), "yellow": (245, 215, 30), "green": (40, 160, 60),
    "blue": (40, 80, 220), "purple": (140, 60, 190), "pink": (250, 135, 195), "white": (245, 245, 245),
    "gray": (128, 128, 128), "black": (20, 20, 20),
}
COLOURS = tuple(PALETTE)
COLOUR_WORDS = {name: (name,) for name in COLOURS} | {"gray": ("gray", "grey"), "purple": ("purple", "violet")}
SHAPES = ("circle", "square", "triangle", "star", "ring")
SHAPE_WORDS = {"circle": ("circle", "disc", "disk"), "square": ("square", "box"), "triangle": ("triangle",),
               "star": ("star",), "ring": ("ring", "donut")}
SIZES = {"small": ((6.0, 9.0), ("small", "tiny", "little")), "big": ((13.0, 18.0), ("big", "large")),
         None: ((8.0, 14.0), ())}
PAIR_RADIUS = (7.0, 11.0)
# Position words: (column, row) anchors in pixels of a 64x64 image; only for shapes up to this radius.
ANCHORS = {"left": 14.0, "center": 32.0, "right": 50.0, "top": 14.0, "middle": 32.0, "bottom": 50.0}
POSITION_MAX_RADIUS = 12.0
POSITIONS = {
    ("left", "top"): ("in the top left corner", "at the top left"), ("center", "top"): ("at the top",),
    ("right", "top"): ("in the top right corner", "at the top right"), ("left", "middle"): ("on the left",),
    ("center", "middle"): ("in the center", "in the middle"), ("right", "middle"): ("on the right",),
    ("left", "bottom"): ("in the bottom left corner", "at the bottom left"), ("center", "bottom"): ("at the bottom",),
    ("right", "bottom"): ("in the bottom right corner", "at the bottom right"),
}
RELATIONS = {"left of": ("left of", "to the left of"), "right of": ("right of", "to the right of"),
             "above": ("above", "over"), "below": ("below", "under", "beneath")}
BACKGROUND_PHRASES = (" on {a} {c} background", " on {c}", ", {c} background", " against {a} {c} backdrop")
PREFIXES = ("a picture of ", "an image of ", "a drawing of ")
HELD_OUT_EVERY = 10  # one combination in ten is never trained on
MARGIN = 2.0


@dataclass(frozen=True)
class Shape:
    """One shape: kind, colour name, centre (x right, y down, pixels) and radius (pixels)."""

    kind: str
    colour: str
    x: float
    y: float
    radius: float


@dataclass(frozen=True)
class Scene:
    """What an image shows and how its caption says it; `position` is (column, row) when the caption names it."""

    background: str
    shapes: tuple
    caption: str
    relation: str = None
    size: str = None
    position: tuple = None

    @property
    def combination(self):
        """The content the held-out split is decided on."""
        a = self.shapes[0]
        if self.relation is None:
            return (a.colour, a.kind, self.background)
        b = self.shapes[1]
        return (a.colour, a.kind, self.relation, b.colour, b.kind)


def is_held_out(combination):
    """Whether a combination belongs to the held-out set (a fixed hash of its words)."""
    return zlib.crc32("|".join(combination).encode()) % HELD_OUT_EVERY == 0


def sample_scene(rng, held_out=False, pair_fraction=0.5):
    """One scene from a random.Random; held_out=True draws only held-out combinations, False only others."""
    while True:
        scene = _pair(rng) if rng.random() < pair_fraction else _single(rng)
        if is_held_out(scene.combination) == held_out:
            return scene


def sample_scenes(seed, count, held_out=False, pair_fraction=0.5):
    """`count` scenes from one seed: the same seed gives the same scenes on any machine."""
    rng = random.Random(seed)
    return [sample_scene(rng, held_out, pair_fraction) for _ in range(count)]


def _article(word):
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(rng, colour, kind, size_word=None):
    words = [w for w in (size_word, rng.choice(COLOUR_WORDS[colour]), rng.choice(SHAPE_WORDS[kind])) if w]
    return f"{_article(words[0])} {' '.join(words)}"


def _background(rng, background):
    word = rng.choice(COLOUR_WORDS[background])
    return rng.choice(BACKGROUND_PHRASES).format(a=_article(word), c=word)


def _single(rng):
    kind, colour = rng.choice(SHAPES), rng.choice(COLOURS)
    background = rng.choice([c for c in COLOURS if c != colour])
    size = rng.choice(("small", "big", None))
    (low, high), size_words = SIZES[size]
    radius = rng.uniform(low, high)
    position = rng.choice(list(POSITIONS)) if radius <= POSITION_MAX_RADIUS and rng.random() < 0.5 else None
    if position:
        x, y = (_clamp(ANCHORS[a] + rng.uniform(-3, 3), radius) for a in position)
    else:
        x, y = (rng.uniform(radius + MARGIN, SIZE - radius - MARGIN) for _ in range(2))
    caption = _noun_phrase(rng, colour, kind, rng.choice(size_words) if size_words else None)
    if rng.random() < 0.15:
        caption = rng.choice(PREFIXES) + caption
    if position:
        caption += " " + rng.choice(POSITIONS[position])
    caption += _background(rng, background)
    return Scene(background, (Shape(kind, colour, x, y, radius),), caption, size=size, position=position)


def _pair(rng):
    (kind_a, kind_b), relation = (rng.choice(SHAPES), rng.choice(SHAPES)), rng.choice(list(RELATIONS))
    colour_a, colour_b = rng.sample(COLOURS, 2)
    background = rng.choice([c for c in COLOURS if c not in (colour_a, colour_b)])
    ra, rb = rng.uniform(*PAIR_RADIUS), rng.uniform(*PAIR_RADIUS)
    reach = max(ra, rb)
    gap = rng.uniform(ra + rb + 6, SIZE - 2 * (MARGIN + reach))  # centre distance along the relation's axis
    low = rng.uniform(reach + MARGIN, SIZE - MARGIN - reach - gap)  # the lower centre on that axis
    along_a, along_b = (low, low + gap) if relation in ("left of", "above") else (low + gap, low)
    across = 32 + rng.uniform(-12, 12)
    across_a, across_b = _clamp(across, ra), _clamp(across + rng.uniform(-4, 4), rb)
    if relation in ("left of", "right of"):
        a, b = Shape(kind_a, colour_a, along_a, across_a, ra), Shape(kind_b, colour_b, along_b, across_b, rb)
    else:
        a, b = Shape(kind_a, colour_a, across_a, along_a, ra), Shape(kind_b, colour_b, across_b, along_b, rb)
    caption = (f"{_noun_phrase(rng, colour_a, kind_a)} {rng.choice(RELATIONS[relation])} "
               f"{_noun_phrase(rng, colour_b, kind_b)}{_background(rng, background)}")
    return Scene(background, (a, b), caption, relation=relation)


def _clamp(value, radius):
    return min(max(value, radius + MARGIN), SIZE - radius - MARGIN)
