"""Memory budgets ("nothing unbounded"): a latent, or a sampling run, that would not fit in the free memory the host
reports, or that is beyond the pack's maximum, is refused before anything is allocated; the error names the input and
the largest size that fits.

The working memory of a sampling run is a rough bound, not a measurement:

    bytes = 4 * batch * H * W * (SAMPLER_STATE * C + NETWORK_ACTIVATIONS * model_channels * passes)
            + 4 * recorded_steps * 2 * batch * C * H * W

with H, W the latent's size (what the U-Net runs on), C its channels, passes 2 with classifier-free guidance (cond and
uncond in one batch) and 1 without, recorded_steps the trajectory kept (x and denoised of each step). SAMPLER_STATE
latent copies cover x, the denoised estimate, derivatives, a multistep or adaptive sampler's history and the noise;
NETWORK_ACTIVATIONS floats per latent pixel and model channel cover one U-Net forward at its peak (the encoder's skip
connections kept for the decoder and the working tensors of the largest level; attention goes through
scaled_dot_product_attention, whose memory grows with the pixels, not with their square). Measured on the bundled
model (32 channels) with cfg at 128 to 512 pixels: 15 to 20 floats per pixel and channel; the constants leave a margin.
"""
import math

FLOAT_BYTES = 4
MAX_LATENT_ELEMENTS = 2**31 - 1  # the pack's maximum: numbers in one latent (32-bit indexing in many kernels)
SAMPLER_STATE = 16  # latent copies a sampler keeps at once, at most
NETWORK_ACTIVATIONS = 24  # floats per latent pixel, model channel and batched pass at a U-Net's peak
WIDGET_STEP = 8  # Empty Latent's width and height are multiples of 8 pixels


def latent_bytes(shape) -> int:
    """Bytes of a float32 tensor of this shape."""
    return FLOAT_BYTES * math.prod(int(n) for n in shape)


def sampling_bytes(shape, model_channels: int, *, guided: bool = True, recorded_steps: int = 0) -> int:
    """The working memory of sampling a (B, C, H, W) latent (the rough bound of the module's docstring)."""
    batch, channels, height, width = (int(n) for n in shape)
    return batch * height * width * _per_latent_pixel(channels, model_channels, guided, recorded_steps)


def _per_latent_pixel(channels, model_channels, guided, recorded_steps):
    passes = 2 if guided else 1
    floats = SAMPLER_STATE * channels + NETWORK_ACTIVATIONS * model_channels * passes + 2 * recorded_steps * channels
    return FLOAT_BYTES * floats


def check_latent_size(shape, free_bytes: int, *, pixels_per_latent: int = 1) -> None:
    """Refuse an empty latent of (B, C, H, W) that would not fit in `free_bytes` or the pack's maximum (a ValueError
    naming width / height / batch_size and the largest size that fits)."""
    needed = latent_bytes(shape)
    limit = min(int(free_bytes), MAX_LATENT_ELEMENTS * FLOAT_BYTES)
    if needed <= limit:
        return
    batch, channels, height, width = (int(n) for n in shape)
    raise ValueError(f"width / height / batch_size: {_images(batch, height, width, pixels_per_latent)} make a "
                     f"latent of {batch}x{channels}x{height}x{width} numbers, {format_bytes(needed)}, "
                     f"{_why(needed, free_bytes, elements=math.prod(shape))}; "
                     f"{_what_fits(FLOAT_BYTES * channels, limit, batch, height, width, pixels_per_latent)}")


def check_sampling_size(shape, model_channels: int, free_bytes: int, *, guided: bool = True, recorded_steps: int = 0,
                        pixels_per_latent: int = 1, input_name: str = "latent") -> None:
    """Refuse sampling a (B, C, H, W) latent whose working memory (the rough bound above) exceeds `free_bytes`, or a
    latent beyond the pack's maximum (a ValueError naming the input and the largest size that fits)."""
    batch, channels, height, width = (int(n) for n in shape)
    elements = batch * channels * height * width
    needed = sampling_bytes(shape, model_channels, guided=guided, recorded_steps=recorded_steps)
    if needed <= free_bytes and elements <= MAX_LATENT_ELEMENTS:
        return
    per_pixel = _per_latent_pixel(channels, model_channels, guided, recorded_steps)
    # the largest latent that fits both the free memory and the pack's maximum, in working-memory bytes
    limit = min(int(free_bytes), MAX_LATENT_ELEMENTS // channels * per_pixel)
    raise ValueError(f"{input_name}: sampling {_images(batch, height, width, pixels_per_latent)} (a latent of "
                     f"{batch}x{channels}x{height}x{width}) with this U-Net needs about {format_bytes(needed)} of "
                     f"working memory (a rough bound: sampler state, network activations"
                     f"{', the recorded steps' if recorded_steps else ''}), "
                     f"{_why(needed, free_bytes, elements=elements)}; "
                     f"{_what_fits(per_pixel, limit, batch, height, width, pixels_per_latent)} "
                     f"(make the latent smaller, e.g. in Empty Latent)")


def _images(batch, height, width, pixels_per_latent):
    count = f"{batch} image" + ("s" if batch != 1 else "")
    return f"{count} of {width * pixels_per_latent}x{height * pixels_per_latent} pixels"


def _why(needed, free_bytes, elements):
    reasons = [f"the {format_bytes(free_bytes)} ComfyUI reports free"] if needed > free_bytes else []
    if elements > MAX_LATENT_ELEMENTS:
        reasons.append(f"the pack's maximum of {MAX_LATENT_ELEMENTS:,} numbers in one latent")
    return "more than " + " and ".join(reasons)


def _what_fits(per_latent_pixel, limit, batch, height, width, pixels_per_latent):
    """'at batch B the largest square image that fits is S x S pixels; at W x H at most N images fit'."""
    side = largest_square_side(per_latent_pixel, limit, batch, pixels_per_latent)
    square = (f"at batch {batch} the largest square image that fits is {side}x{side} pixels" if side else
              f"not even the smallest image fits at batch {batch}")
    fitting = max(0, limit // (per_latent_pixel * height * width))
    size = f"{width * pixels_per_latent}x{height * pixels_per_latent}"
    images = (f"at {size} pixels at most {fitting} image{'s' if fitting != 1 else ''} fit" if fitting else
              f"at {size} pixels not even one image fits")
    return f"{square}; {images}"


def largest_square_side(per_latent_pixel: int, limit: int, batch: int, pixels_per_latent: int = 1) -> int:
    """The largest square image side in pixels (a multiple of 8) whose latent batch fits in `limit` bytes (0: none)."""
    latent_side = math.isqrt(max(0, int(limit)) // (per_latent_pixel * max(1, int(batch))))
    return latent_side * pixels_per_latent // WIDGET_STEP * WIDGET_STEP


def format_bytes(count: int) -> str:
    """Bytes in binary units, about three significant figures: '805 MiB', '13.2 TiB', '1.25 GiB'."""
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            break
        value /= 1024
    if unit == "bytes":
        return f"{int(value)} bytes"
    return f"{value:.{0 if value >= 100 else 1 if value >= 10 else 2}f} {unit}"
