"""Line plots of noise schedules (noise level against step) drawn with Pillow, no plotting library."""
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PALETTE = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14),
           (148, 103, 189), (140, 86, 75), (227, 119, 194), (23, 190, 207))
BACKGROUND, INK, GRID = (255, 255, 255), (30, 30, 30), (225, 225, 225)


def plot_sigmas(series, labels, width=768, height=512, log_scale=True, title="Noise level per step"):
    """Draw each 1-D sigma sequence as a line with markers; returns an RGB PIL image.

    On the log scale a final sigma of 0 cannot be placed; it is drawn on the bottom edge
    with a hollow marker and the legend says so.
    """
    if not series:
        raise ValueError("plot_sigmas: give at least one sigma sequence")
    series = [np.asarray(s, dtype=np.float64).reshape(-1) for s in series]
    for index, sigmas in enumerate(series):
        if not np.isfinite(sigmas).all():
            label = labels[index] if index < len(labels) else f"series {index + 1}"
            raise ValueError(f"{label}: holds NaN or infinite noise levels, which have no place on a plot")
    scale = max(1.0, height / 512)
    font = ImageFont.load_default(size=round(15 * scale))
    small = ImageFont.load_default(size=round(13 * scale))
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)

    left, right = round(78 * scale), width - round(20 * scale)
    top, bottom = round(44 * scale), height - round(58 * scale)
    steps = max(len(s) for s in series) - 1
    to_x = _linear(0, max(steps, 1), left, right)
    positive = np.concatenate([s[s > 0] for s in series] or [np.ones(1)])
    if positive.size == 0:
        positive = np.ones(1)
    if log_scale:
        low_exponent = max(math.floor(math.log10(positive.min())), -300)  # decades a float64 can hold
        high_exponent = min(max(math.ceil(math.log10(positive.max())), low_exponent + 1), 308)
        low, high = 10.0**low_exponent, 10.0**high_exponent
        to_y = _log(low, high, bottom, top)
        y_ticks = [10.0**e for e in range(low_exponent, high_exponent + 1)]
    else:
        high = _nice_ceiling(max(s.max() for s in series))
        to_y = _linear(0.0, high, bottom, top)
        y_ticks = list(np.linspace(0.0, high, 6))

    for value in y_ticks:
        y = to_y(value)
        draw.line([(left, y), (right, y)], fill=GRID, width=1)
        _text(draw, (left - 8, y), _format_tick(value), small, anchor="rm")
    for step in _step_ticks(steps):
        x = to_x(step)
        draw.line([(x, top), (x, bottom)], fill=GRID, width=1)
        _text(draw, (x, bottom + 6), str(step), small, anchor="ma")
    draw.rectangle([left, top, right, bottom], outline=INK, width=1)

    for index, sigmas in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        points = [(to_x(i), to_y(s) if (s > 0 or not log_scale) else bottom) for i, s in enumerate(sigmas)]
        draw.line(points, fill=colour, width=max(2, round(2 * scale)), joint="curve")
        radius = max(3, round(3 * scale))
        for (x, y), sigma in zip(points, sigmas):
            hollow = log_scale and sigma <= 0
            draw.ellipse([x - radius, y - radius, x + radius, y + radius],
                         fill=BACKGROUND if hollow else colour, outline=colour, width=2)

    _text(draw, ((left + right) / 2, round(12 * scale)), title, font, anchor="ma")
    _text(draw, ((left + right) / 2, height - round(8 * scale)), "step", font, anchor="md")
    axis_label = "sigma (log scale)" if log_scale else "sigma"
    label_image = Image.new("RGBA", (round(200 * scale), round(22 * scale)), (0, 0, 0, 0))
    ImageDraw.Draw(label_image).text((label_image.width / 2, label_image.height / 2), axis_label,
                                     font=small, fill=INK, anchor="mm")
    rotated = label_image.rotate(90, expand=True)
    image.paste(rotated, (round(2 * scale), round((top + bottom - rotated.height) / 2)), rotated)
    _legend(draw, series, labels, small, right - round(8 * scale), top + round(8 * scale), log_scale)
    return image


def _legend(draw, series, labels, font, right, top, log_scale):
    """A boxed legend in the top-right corner: colour swatch, label and step count per series."""
    entries = []
    for sigmas, label in zip(series, labels):
        note = f"{label} ({len(sigmas) - 1} steps)"
        if log_scale and sigmas.size and sigmas[-1] <= 0:
            note += ", last = 0"
        entries.append(note)
    line_height = font.size + 6
    text_width = max(draw.textlength(e, font=font) for e in entries)
    box = [right - text_width - 44, top, right, top + line_height * len(entries) + 8]
    draw.rectangle(box, fill=BACKGROUND, outline=GRID)
    for index, entry in enumerate(entries):
        y = top + 4 + line_height * index + line_height / 2
        colour = PALETTE[index % len(PALETTE)]
        draw.line([(box[0] + 8, y), (box[0] + 30, y)], fill=colour, width=3)
        _text(draw, (box[0] + 36, y), entry, font, anchor="lm")


def _text(draw, xy, text, font, anchor):
    draw.text(xy, text, font=font, fill=INK, anchor=anchor)


def _linear(a, b, pa, pb):
    return lambda v: pa + (v - a) / (b - a) * (pb - pa)  # divided first: huge values do not overflow


def _log(a, b, pa, pb):
    la, lb = math.log10(a), math.log10(b)
    return lambda v: pa + (math.log10(v) - la) * (pb - pa) / (lb - la)


def _step_ticks(steps):
    stride = max(1, math.ceil(steps / 10))
    ticks = list(range(0, steps + 1, stride))
    return ticks if ticks[-1] == steps else ticks + [steps]


def _nice_ceiling(value):
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    return next((m * magnitude for m in (1, 2, 2.5, 5, 10) if value <= m * magnitude < math.inf), value)


def _format_tick(value):
    return f"{value:g}" if 1e-3 <= value < 1e4 or value == 0 else f"{value:.0e}"
