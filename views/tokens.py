"""A prompt's tokens as CLIP reads them: one box per window of 75, one chip per token, coloured by weight.

It shows what the text encoder sees and prompt boxes hide: how words split into tokens, which
weight each token got, where the 75-token windows end (tokens in different windows never attend to
each other), which spans moved whole to the next window and which were cut, and textual inversions.
"""
import math

from PIL import Image, ImageDraw, ImageFont

BACKGROUND, INK, MUTED, FRAME = (255, 255, 255), (30, 30, 30), (120, 120, 120), (200, 200, 200)
NEUTRAL, EMBEDDING, CUT = (232, 232, 232), (206, 186, 236), (214, 39, 40)
UP, DOWN = (255, 127, 14), (31, 119, 180)  # weights above 1 warm, below 1 cool
PADDING, GAP, WORD_GAP = 8, 2, 7


def weight_colour(weight):
    """Neutral at 1; towards orange above 1 and blue below, full colour at x2 or x0.5 (and beyond)."""
    if weight == 1.0 or not math.isfinite(weight):
        return NEUTRAL
    if weight <= 0:
        return DOWN
    amount = min(1.0, abs(math.log2(weight)))
    target = UP if weight > 1 else DOWN
    return tuple(round(n + (t - n) * amount) for n, t in zip(NEUTRAL, target))


def draw_tokens(windows, token_text, spans=(), problems=(), width=1024, max_height=4096, title="Tokens"):
    """windows: PromptTokens.windows (Token.value an id or a vector); token_text(id) -> str. Returns an RGB image."""
    font, small = ImageFont.load_default(size=15), ImageFont.load_default(size=11)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    blocks = [_window_layout(i, window, token_text, spans, windows, font, small, measure, width) for i, window in enumerate(windows)]
    count = sum(len(_content(w)) for w in windows)
    header = f"{title}: {count} tokens in {len(windows)} window{'s' * (len(windows) != 1)} of 75"
    footer = [f"problem: {p}" for p in problems]
    height = 40 + sum(b["height"] + PADDING for b in blocks) + 18 * len(footer) + PADDING
    shown = len(blocks)
    while height > max_height and shown > 1:
        shown -= 1
        height -= blocks[shown]["height"] + PADDING
    if shown < len(blocks):
        footer.insert(0, f"... {len(blocks) - shown} more windows not shown")
        height += 18
    image = Image.new("RGB", (width, min(height, max_height)), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((PADDING, 10), header, font=font, fill=INK)
    y = 40
    for block in blocks[:shown]:
        _draw_window(draw, block, y, width, font, small)
        y += block["height"] + PADDING
    for line in footer:
        draw.text((PADDING, y), line, font=small, fill=CUT if line.startswith("problem") else MUTED)
        y += 18
    return image


def _content(window):
    """The prompt's own tokens in a window (start, end and padding belong to no span)."""
    return [t for t in window if t.span]


def _window_layout(index, window, token_text, spans, windows, font, small, measure, width):
    """Chip positions inside one window box (relative), and the box's height."""
    tokens = _content(window)
    chips, x, y, line = [], PADDING, 24, font.size + small.size + 10
    for position, token in enumerate(tokens):
        is_vector = not isinstance(token.value, int)
        label = _vector_label(token, tokens, position, spans) if is_vector else token_text(token.value)
        text = label.strip() or "␣"
        chip_width = max(measure.textlength(text, font=font), measure.textlength(_weight_label(token.weight), font=small)) + 8
        if x + chip_width > width - 2 * PADDING and x > PADDING:
            x, y = PADDING, y + line
        cut = position == 0 and index > 0 and _continues(windows[index - 1], token)
        chips.append(dict(x=x, y=y, width=chip_width, text=text, token=token, vector=is_vector, cut=cut))
        x += chip_width + (WORD_GAP if label.endswith(" ") or is_vector else GAP)
    following = _content(windows[index + 1])[:1] if index + 1 < len(windows) else []
    moved = ""
    if following and len(tokens) < 75 and not _continues(window, following[0]):
        moved = spans[following[0].span - 1].strip() if following[0].span <= len(spans) else ""
    return dict(index=index, chips=chips, height=y + line + 16, used=len(tokens), moved=moved)


def _continues(previous, token):
    """True when the previous window's last token is from the same span: the span was cut at the edge."""
    before = _content(previous)
    return bool(before) and before[-1].span == token.span


def _vector_label(token, tokens, position, spans):
    name = spans[token.span - 1] if 0 < token.span <= len(spans) else "embedding"
    first = next(i for i in range(position, -1, -1) if i == 0 or tokens[i - 1].span != token.span)
    return f"{name}[{position - first}]"


def _shorten(text, length=40):
    return text if len(text) <= length else text[: length - 1] + "…"


def _weight_label(weight):
    return "" if weight == 1.0 else f"x{weight:.3g}"


def _draw_window(draw, block, top, width, font, small):
    draw.rectangle([PADDING // 2, top, width - PADDING // 2, top + block["height"]], outline=FRAME, width=1)
    label = f"window {block['index'] + 1}: {block['used']}/75 tokens"
    if block["used"] < 75:
        label += f", then the end token and {75 - block['used']} padding"
    if block["moved"]:
        label += f" ('{_shorten(block['moved'])}' did not fit and moved whole to window {block['index'] + 2})"
    draw.text((PADDING, top + 5), label, font=small, fill=MUTED)
    for chip in block["chips"]:
        x, y = chip["x"], top + chip["y"]
        fill = EMBEDDING if chip["vector"] else weight_colour(chip["token"].weight)
        draw.rounded_rectangle([x, y, x + chip["width"], y + font.size + 6], radius=4, fill=fill)
        draw.text((x + 4, y + 2), chip["text"], font=font, fill=INK)
        if chip["token"].weight != 1.0:
            draw.text((x + 4, y + font.size + 7), _weight_label(chip["token"].weight), font=small, fill=MUTED)
        if chip["cut"]:
            draw.line([(x - 2, y - 2), (x - 2, y + font.size + 8)], fill=CUT, width=3)
