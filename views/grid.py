"""Image grids with a caption under each picture, drawn with Pillow: side-by-side comparisons."""
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND, INK = (255, 255, 255), (30, 30, 30)
PADDING = 8
# The largest grid drawn: 33.6 million pixels (8192 x 4096), 100 MB as RGB bytes and 400 MB as ComfyUI's float IMAGE.
MAX_GRID_PIXELS = 2**25


def image_grid(images, captions, columns=0, cell_size=0, padding=PADDING, shown_input="images",
               cell_input="cell_size"):
    """Lay out RGB float images (H, W, 3 in [0, 1]) in a grid, each with its caption below; returns a PIL image.

    columns=0 puts everything on one row; cell_size=0 keeps the largest image's size (smaller ones
    are scaled up with nearest-neighbour, so small pixel-space images stay crisp). A grid of more than
    MAX_GRID_PIXELS is refused before it is drawn (check_grid_size; the inputs named as given).
    """
    if not images:
        raise ValueError("image_grid: give at least one image")
    arrays = [np.asarray(a, dtype=np.float32) for a in images]
    cell = cell_size or max(max(a.shape[:2]) for a in arrays)
    check_grid_size(len(arrays), cell, layout=lambda n: (n, columns or n), padding=padding, shown_input=shown_input,
                    cell_input=cell_input)
    pictures = [Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8)) for a in arrays]
    columns = columns or len(pictures)
    font = ImageFont.load_default(size=_font_size(cell))
    caption_height = font.size + 10
    canvas = Image.new("RGB", grid_size(len(pictures), columns, cell, padding), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for index, picture in enumerate(pictures):
        row, column = divmod(index, columns)
        x = padding + column * (cell + padding)
        y = padding + row * (cell + caption_height + padding)
        fitted = _fit(picture, cell)
        canvas.paste(fitted, (x + (cell - fitted.width) // 2, y + (cell - fitted.height) // 2))
        caption = captions[index] if index < len(captions) else ""
        draw.text((x + cell / 2, y + cell + 4), _shorten(draw, caption, font, cell), font=font, fill=INK, anchor="ma")
    return canvas


def _font_size(cell):
    return max(12, min(18, cell // 12))


def grid_size(count, columns, cell, padding=PADDING):
    """(width, height) in pixels of a grid of `count` cells of `cell` pixels, `columns` to a row (0: one row)."""
    columns = columns or count
    rows = math.ceil(count / columns) if columns else 0
    return padding + columns * (cell + padding), padding + rows * (cell + _font_size(cell) + 10 + padding)


def check_grid_size(shown, cell, *, layout=None, padding=PADDING, shown_input="images", cell_input="cell_size"):
    """Refuse a grid of more than MAX_GRID_PIXELS before anything is drawn: a ValueError naming `cell_input` and
    `shown_input`, with the most `shown` that fit at this cell size and the largest cell size that fits `shown`.

    layout(n) -> (pictures, columns) for n of what `shown_input` counts (default: n pictures on one row)."""
    layout = layout or (lambda n: (n, n))

    def pixels(n, c):
        width, height = grid_size(*layout(n), c, padding)
        return width * height

    if pixels(shown, cell) <= MAX_GRID_PIXELS:
        return
    width, height = grid_size(*layout(shown), cell, padding)
    most_shown = _largest(lambda n: pixels(n, cell) <= MAX_GRID_PIXELS, shown)
    largest_cell = _largest(lambda c: pixels(shown, c) <= MAX_GRID_PIXELS, cell)
    raise ValueError(f"{cell_input} / {shown_input}: {shown} {shown_input} in cells of {cell} pixels make a grid of "
                     f"{width}x{height} = {width * height / 1e6:.1f} million pixels, more than the "
                     f"{MAX_GRID_PIXELS / 1e6:.1f} million a grid may have; at {cell_input} {cell} at most "
                     f"{most_shown} {shown_input} fit, and {shown} {shown_input} fit in cells of at most "
                     f"{largest_cell} pixels")


def _largest(fits, high):
    """The largest n in 0..high with fits(n), for a `fits` true up to some n and false after (0 when none)."""
    low = 0
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def _fit(picture, cell):
    """Scale to fit the cell, keeping the aspect ratio; nearest-neighbour when enlarging."""
    scale = cell / max(picture.size)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(size, Image.NEAREST if scale >= 1 else Image.LANCZOS)


def _shorten(draw, text, font, width):
    while text and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…"
    return text
