"""Latents for the pack's U-Net: an empty one of the right shape, and pixel-space latents <-> IMAGE (x = 2 img - 1)."""
import comfy.model_management
import torch
from comfy_api.latest import io

from ..pipeline.budget import check_latent_size
from ..views.pixels import image_to_pixels, pixels_to_image
from .checks import CheckedNode
from .compat import schema
from .wires import UNET, denoiser_of

CATEGORY = "diffusion_blocks/latent"
MAX_RESOLUTION = 16384


def empty_latent_shape(denoiser, width: int, height: int, batch_size: int) -> tuple:
    """(B, C, H, W) of an empty latent of the network's family: pixel space at full size, SD latents at 1/8."""
    step = denoiser.family.latent.pixels_per_latent
    for name, size in (("width", width), ("height", height)):
        if size % step:
            raise ValueError(f"{name}: {size} is not a multiple of {step}: one latent pixel of this U-Net stands "
                             f"for {step}x{step} image pixels")
    return (batch_size, denoiser.network.config.latent_channels, height // step, width // step)


class EmptyLatent(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_EmptyLatent", display_name="Empty Latent", category=CATEGORY,
            search_aliases=['empty latent image', 'blank latent', 'image size'],
            description="An all-zero latent of the shape the U-Net works on: RGB pixels at full size for a "
                        "pixel-space network, 4-channel latents at 1/8 of the size for Stable Diffusion. Sampling "
                        "adds the noise.",
            inputs=[
                UNET.Input("unet", tooltip="The noise predictor the latent is for (it knows its channels and scale)."),
                io.Int.Input("width", default=64, min=8, max=MAX_RESOLUTION, step=8, tooltip="Image width in pixels."),
                io.Int.Input("height", default=64, min=8, max=MAX_RESOLUTION, step=8, tooltip="Image height in pixels."),
                io.Int.Input("batch_size", default=1, min=1, max=4096, tooltip="How many images at once."),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="Zeros of the right shape.")])

    @classmethod
    def execute(cls, unet, width, height, batch_size) -> io.NodeOutput:
        shape = empty_latent_shape(denoiser_of(unet), width, height, batch_size)
        device = comfy.model_management.intermediate_device()
        check_latent_size(shape, comfy.model_management.get_free_memory(device),  # before allocating
                          pixels_per_latent=denoiser_of(unet).family.latent.pixels_per_latent)
        return io.NodeOutput({"samples": torch.zeros(shape, device=device)})


class LatentToImage(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_LatentToImage", display_name="Latent to Image", category=CATEGORY,
            search_aliases=['decode', 'latent to pixels'],
            description="For pixel-space models, whose latent is the picture: maps [-1, 1] to ComfyUI's [0, 1] "
                        "IMAGE (img = (x + 1) / 2, clamped). SD latents need VAE Decode instead.",
            inputs=[io.Latent.Input("latent", tooltip="A pixel-space latent: 3 channels in [-1, 1].")],
            outputs=[io.Image.Output(display_name="image", tooltip="The picture, (B, H, W, 3) in [0, 1].")])

    @classmethod
    def execute(cls, latent) -> io.NodeOutput:
        samples = latent["samples"]
        if samples.ndim != 4 or samples.shape[1] != 3:
            raise ValueError(f"latent: shape {tuple(samples.shape)} is not a pixel-space latent (3 channels); "
                             f"decode SD latents with VAE Decode")
        return io.NodeOutput(pixels_to_image(samples))


class ImageToLatent(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_ImageToLatent", display_name="Image to Latent", category=CATEGORY,
            search_aliases=['encode', 'pixels to latent', 'image to image', 'img2img'],
            description="For pixel-space models: the picture as their latent, [0, 1] mapped to [-1, 1] "
                        "(x = 2 img - 1). Start image-to-image from it with a schedule that begins below the top.",
            inputs=[io.Image.Input("image", tooltip="A picture (its RGB channels are used).")],
            outputs=[io.Latent.Output(display_name="latent", tooltip="(B, 3, H, W) in [-1, 1].")])

    @classmethod
    def execute(cls, image) -> io.NodeOutput:
        return io.NodeOutput({"samples": image_to_pixels(image)})


LATENT_NODES = [EmptyLatent, LatentToImage, ImageToLatent]
