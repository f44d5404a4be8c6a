"""The shapes data: rendering against exact areas, captions against their scenes, the held-out split, the judge."""
import math
from collections import defaultdict

import numpy as np
import pytest

from diffusion_blocks.networks.families import TEXT_CONDITIONINGS
from diffusion_blocks.networks.clip_tokenizer import default_tokenizer
from diffusion_blocks.networks.prompt_syntax import tokenize_prompt
from diffusion_blocks.training import render as R
from diffusion_blocks.training.analyse import analyse, score
from diffusion_blocks.training.data import caption_ids, make_chunk
from diffusion_blocks.training.render import pack, render
from diffusion_blocks.views.pixels import to_uint8
from diffusion_blocks.training.scenes import (COLOUR_WORDS, PALETTE, POSITIONS, RELATIONS, SHAPE_WORDS, SHAPES, SIZES,
                                              Scene, Shape, is_held_out, sample_scenes)

RADIUS = 20.0
STAR_R = R.STAR_OUTER * RADIUS
# Exact areas of each outline at RADIUS: circle, square of side 2a, equilateral triangle of circumradius R,
# ring (annulus), and a 5-point star: ten triangles (centre, tip, notch) of area R r sin(36 deg) / 2.
EXACT_AREA = {
    "circle": math.pi * RADIUS**2,
    "square": (2 * R.SQUARE_HALF_SIDE * RADIUS) ** 2,
    "triangle": 3 * math.sqrt(3) / 4 * (R.TRIANGLE_CIRCUMRADIUS * RADIUS) ** 2,
    "ring": math.pi * RADIUS**2 * (1 - R.RING_INNER**2),
    "star": 5 * STAR_R * (R.STAR_INNER * STAR_R) * math.sin(math.pi / 5),
}


def one_shape(kind, colour="red", background="white", x=32.0, y=32.0, radius=RADIUS):
    return Scene(background, (Shape(kind, colour, x, y, radius),), "")


@pytest.mark.parametrize("kind", SHAPES)
def test_rendered_coverage_equals_the_exact_area(kind):
    image = render(pack([one_shape(kind, colour="black", background="white")]), size=256)[0]
    # white (1) -> black (-1 after the [-1, 1] map, 20/255 in the palette): coverage from the red channel
    white, black = PALETTE["white"][0] / 255 * 2 - 1, PALETTE["black"][0] / 255 * 2 - 1
    coverage = (white - image[0]) / (white - black)
    area = coverage.sum().item() / (256 / 64) ** 2
    assert area == pytest.approx(EXACT_AREA[kind], rel=0.01)


def test_shape_colour_inside_background_outside():
    image = to_uint8(render(pack([one_shape("square", colour="blue", background="yellow")])))[0].numpy()
    assert tuple(image[32, 32]) == PALETTE["blue"]
    assert tuple(image[0, 0]) == PALETTE["yellow"]


def test_the_star_points_up_and_the_triangle_too():
    image = to_uint8(render(pack([one_shape("star", x=32, y=32, radius=20)])))[0].numpy()
    tip_row = 32 - int(R.STAR_OUTER * 20) + 2  # just below the top tip
    assert tuple(image[tip_row, 32]) == PALETTE["red"] and tuple(image[64 - tip_row, 32]) == PALETTE["white"]
    image = to_uint8(render(pack([one_shape("triangle", x=32, y=32, radius=16)])))[0].numpy()
    assert tuple(image[14, 32]) == PALETTE["red"] and tuple(image[14, 20]) == PALETTE["white"]


def test_same_seed_same_scenes_other_seed_others():
    assert sample_scenes(5, 50) == sample_scenes(5, 50)
    assert sample_scenes(5, 50) != sample_scenes(6, 50)


def test_captions_say_what_the_scene_shows():
    for scene in sample_scenes(11, 400):
        words = scene.caption
        for shape in scene.shapes:
            assert any(f"{c} {s}" in words for c in COLOUR_WORDS[shape.colour] for s in SHAPE_WORDS[shape.kind])
            assert shape.radius + 1.99 <= shape.x <= 64 - shape.radius - 1.99
            assert shape.radius + 1.99 <= shape.y <= 64 - shape.radius - 1.99
        assert any(f" {w} " in words + " " or f" {w}," in words for w in COLOUR_WORDS[scene.background])
        assert scene.background not in {s.colour for s in scene.shapes}
        if scene.relation:
            a, b = scene.shapes
            assert any(f" {w} " in words for w in RELATIONS[scene.relation])
            dx, dy = b.x - a.x, b.y - a.y
            expected = {"left of": dx, "right of": -dx, "above": dy, "below": -dy}[scene.relation]
            assert expected >= a.radius + b.radius + 6 - 1e-9  # they do not touch
        else:
            low, high = SIZES[scene.size][0]
            assert low <= scene.shapes[0].radius <= high
            if scene.position:
                assert any(phrase in words for phrase in POSITIONS[scene.position])


def test_held_out_combinations_are_never_in_training_chunks():
    held = sample_scenes(3, 300, held_out=True)
    assert all(is_held_out(s.combination) for s in held)
    assert {s.relation is None for s in held} == {True, False}  # both kinds are held out
    kinds, centres, radii, colours, backgrounds, tokens = make_chunk(seed=0, index=7, size=512)
    names = list(PALETTE)

    def name(rgb):
        return names[int(np.argmin([np.abs(np.array(PALETTE[n]) / 255 - rgb).sum() for n in names]))]

    for i in range(512):
        present = kinds[i] >= 0
        shapes = [(name(colours[i, j]), SHAPES[kinds[i, j]]) for j in range(2) if present[j]]
        if len(shapes) == 1:
            combination = (*shapes[0], name(backgrounds[i]))
        else:
            a, b = centres[i]
            relation = ("left of" if b[0] > a[0] else "right of") if abs(b[0] - a[0]) > abs(b[1] - a[1]) else \
                       ("above" if b[1] > a[1] else "below")
            combination = (*shapes[0], relation, *shapes[1])
        assert not is_held_out(combination)


def test_caption_tokens_are_the_text_encoders_own():
    use = TEXT_CONDITIONINGS["small"].towers[0]
    for caption in ("a red circle left of a blue square on a white background", ""):
        window = tokenize_prompt(caption, default_tokenizer(), use.pad, width=64).windows[0]
        assert caption_ids(caption).tolist() == [t.value for t in window]
    ids = caption_ids("a red circle")
    assert ids[0] == default_tokenizer().start and len(ids) == 77


def test_the_judge_agrees_with_the_ground_truth():
    scenes = sample_scenes(21, 400) + sample_scenes(22, 200, held_out=True)
    images = to_uint8(render(pack(scenes))).numpy()
    passed = defaultdict(list)
    for scene, image in zip(scenes, images):
        for check, results in score(scene, image).items():
            passed[check] += results
    assert set(passed) == {"background", "colour", "shape", "position", "relation"}
    for check, results in passed.items():
        assert np.mean(results) >= 0.995, check


@pytest.mark.parametrize("kind", SHAPES)
def test_the_judge_names_every_shape_at_every_size(kind):
    for radius in (6.0, 9.0, 13.0, 18.0):
        image = to_uint8(render(pack([one_shape(kind, radius=radius)])))[0].numpy()
        assert analyse(image)[1][0].kind == kind, radius


def test_the_judge_fails_wrong_pictures():
    asked = Scene("white", (Shape("circle", "red", 20, 32, 9), Shape("square", "blue", 44, 32, 9)), "",
                  relation="left of")
    swapped = Scene("gray", (Shape("star", "green", 44, 32, 9), Shape("square", "blue", 20, 32, 9)), "")
    result = score(asked, to_uint8(render(pack([swapped])))[0].numpy())
    assert result == {"background": [False], "colour": [False, True], "shape": [False, True], "relation": [False]}
