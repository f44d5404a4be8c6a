"""Image grids with a caption under each picture, drawn with Pillow: side-by-side comparisons."""
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND, INK = (255, 255, 255), (30, 30, 30)


def image_grid(images, captions, columns=0, cell_size=0, padding=8):
    """Lay out RGB float images (H, W, 3 in [0, 1]) in a grid, each with its caption below; returns a PIL image.

    columns=0 puts everything on one row; cell_size=0 keeps the largest image's size (smaller ones
    are scaled up with nearest-neighbour, so small pixel-space images stay crisp).
    """
    if not images:
        raise ValueError("image_grid: give at least one image")
    pictures = [Image.fromarray((np.clip(np.asarray(a, dtype=np.float32), 0, 1) * 255).round().astype(np.uint8))
                for a in images]
    cell = cell_size or max(max(p.size) for p in pictures)
    columns = columns or len(pictures)
    rows = math.ceil(len(pictures) / columns)
    font = ImageFont.load_default(size=max(12, min(18, cell // 12)))
    caption_height = font.size + 10
    canvas = Image.new("RGB", (padding + columns * (cell + padding), padding + rows * (cell + caption_height + padding)),
                       BACKGROUND)
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


def _fit(picture, cell):
    """Scale to fit the cell, keeping the aspect ratio; nearest-neighbour when enlarging."""
    scale = cell / max(picture.size)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(size, Image.NEAREST if scale >= 1 else Image.LANCZOS)


def _shorten(draw, text, font, width):
    while text and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…"
    return text
