"""Sampling with the pack's U-Net, and watching it: Sample, Denoising Trajectory, Add Noise.

Each node adapts ComfyUI's wires (nodes/wires.py) and calls the one pipeline (pipeline/)."""
import logging

import comfy.model_management
from comfy_api.latest import io

from ..pipeline import evenly_spaced, generate, noisy_start, start_noise
from ..pipeline.budget import check_sampling_size
from ..views.grid import check_grid_size, image_grid
from ..views.latents import latent_picture, noisy_picture
from ..views.pixels import image_to_pixels
from .checks import CheckedNode
from .compat import schema
from .images import to_image_tensor
from .host_sampling import sample_on_host
from .wires import (UNET, as_k_model, checked_latent, checked_sampler, denoiser_of, latent_picture_for, model_input,
                    needs_host, pack_denoiser, part_way, pixel_size, progress_with_previews, ready,
                    text_condition, to_latent, vae_decoder)

CATEGORY = "diffusion_blocks/sampling"
log = logging.getLogger(__name__)
NOISY_VIEWS = ("x0 + sigma * noise", "x / sqrt(1 + sigma^2)")
NOISY_VIEW_TOOLTIP = ("How a noisy sample is drawn: as it is (x0 + sigma * noise, clipped to the picture's range: "
                      "the image drowns in noise as sigma grows) or scaled to unit variance (x / sqrt(1 + sigma^2), "
                      "what the network is fed: the image fades into noise).")
PICTURE_TOOLTIP = ("Optional native VAE to turn latents into pictures. Without it, pixel-space latents are shown as "
                   "they are and SD latents through a cheap linear RGB approximation (colours only roughly right).")


def _sampling_inputs():
    """The inputs Sample and Denoising Trajectory share."""
    return [
        model_input(),
        io.Sampler.Input("sampler", tooltip="How to step: one of the pack's sampler nodes or ComfyUI's KSamplerSelect "
                                            "(any k-diffusion sampler)."),
        io.Sigmas.Input("sigmas", tooltip="The noise levels to step through, highest first (a schedule node). The "
                                          "first decides how much noise is added to the latent."),
        io.Latent.Input("latent", tooltip="Where to start: an empty latent (Empty Latent) for a new image, or an "
                                          "encoded image for image-to-image (noise of the first sigma is added). The "
                                          "latent of a Sample whose schedule stopped at this schedule's first sigma "
                                          "goes on where it stopped: no noise is added and its noise stream "
                                          "continues; with the same sampler, two halves of a schedule give the "
                                          "picture of the whole."),
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="Seed of the start noise and of stochastic samplers' step noise (drawn on the CPU: the "
                             "same image on every device). Item k of a batch is the image of seed + k. Not used when "
                             "the latent continues a Sample that stopped part-way (its own seed goes on)."),
        io.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1, round=0.01,
                       tooltip="Classifier-free guidance scale (Ho & Salimans 2022): how strongly the positive "
                               "prompt is followed against the negative. 1 disables guidance (one network call)."),
        io.Conditioning.Input("positive", optional=True,
                              tooltip="What the image should show (a text encoder's output). Not connected: a zero text "
                                      "embedding (no text at all, which is not the encoded empty prompt)."),
        io.Conditioning.Input("negative", optional=True,
                              tooltip="What guidance steers away from. Not connected: a zero text embedding; for the "
                                      "model's own unconditional prediction encode an empty text instead."),
    ]


def run_sampling(unet, sampler, sigmas, latent, seed, cfg, positive=None, negative=None, record=False) -> tuple:
    """Sample with a DB_UNET or MODEL wire: (Sampled in latent units, the model's latent format). The pack's own
    guidance runs what it honours (its fast path); anything more goes through ComfyUI's guider (needs_host)."""
    if sigmas is None or sigmas.numel() == 0:
        raise ValueError("sigmas: empty; connect a schedule")
    fn, options = checked_sampler(sampler)
    denoiser, steps = pack_denoiser(unet), sigmas.numel() - 1
    if denoiser is not None:
        check_memory(unet, checked_latent(latent, denoiser, masked=True), cfg, recorded_steps=steps if record else 0)
    latent_format = unet.get_model_object("latent_format")
    report = progress_with_previews(latent_format, unet.load_device, steps)
    reason = needs_host(unet, latent, positive, negative)
    if reason is None:
        sampled = run_on_pack(unet, fn, options, sigmas, latent, seed, cfg, positive, negative, report, record)
        return sampled, latent_format
    log.debug("Diffusion Blocks: sampling through ComfyUI's guider for %s", reason)
    sampled = sample_on_host(unet, fn, options, sigmas, latent, seed, cfg, positive, negative, callback=report,
                             record=record, resume=part_way(latent, sigmas))
    return sampled, latent_format


def run_on_pack(unet, fn, options, sigmas, latent, seed, cfg, positive, negative, report, record):
    """Sampled with the pack's own guidance (pipeline.generate: its fast path on a FastUNet)."""
    denoiser, device = ready(unet)
    samples = latent["samples"]
    size = pixel_size(denoiser, samples)
    cond = text_condition(positive, denoiser, size)
    uncond = text_condition(negative, denoiser, size, negative=True)
    return generate(denoiser, fn, sigmas, samples, seed, cond=cond, uncond=uncond, cfg=cfg, device=device,
                    options=options, callback=report, record=record, wrap=as_k_model(denoiser),
                    resume=part_way(latent, sigmas))


def check_memory(unet, samples, cfg, recorded_steps=0) -> None:
    """Refuse, before loading anything, a run whose working memory exceeds what ComfyUI reports free on the U-Net's
    device (the rough bound of pipeline/budget.py)."""
    denoiser = denoiser_of(unet)
    check_sampling_size(samples.shape, denoiser.network.config.model_channels,
                        comfy.model_management.get_free_memory(unet.load_device), guided=cfg != 1.0,
                        recorded_steps=recorded_steps, pixels_per_latent=denoiser.family.latent.pixels_per_latent)


class Sample(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_Sample", display_name="Sample", category=CATEGORY,
            search_aliases=['ksampler', 'sampling', 'generate', 'denoise', 'sampler custom'],
            description="Make an image with the pack's U-Net: start from noise of the first sigma (added to the "
                        "latent), and let the sampler remove a little noise at each level of the schedule, the "
                        "noise predictor guided by the prompts. Works with the pack's samplers and ComfyUI's own.",
            inputs=_sampling_inputs(),
            outputs=[io.Latent.Output(display_name="latent", tooltip="The sampler's result (its last step)."),
                     io.Latent.Output(display_name="denoised",
                                      tooltip="The network's estimate of the clean image at the last step.")])

    @classmethod
    def execute(cls, unet, sampler, sigmas, latent, seed, cfg, positive=None, negative=None) -> io.NodeOutput:
        sampled, _ = run_sampling(unet, sampler, sigmas, latent, seed, cfg, positive, negative)
        return io.NodeOutput(to_latent(sampled.samples, latent, sampled), to_latent(sampled.denoised, latent))


class DenoisingTrajectory(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_DenoisingTrajectory", display_name="Denoising Trajectory", category=CATEGORY,
            search_aliases=['preview steps', 'intermediate steps', 'predicted x0', 'denoising steps'],
            description="Sample like Sample, and show the way there: at each step the noisy sample (top row) and "
                        "the network's guess of the clean image (bottom row), with the step and noise level under "
                        "each picture. The guess sharpens long before the noise is gone.",
            inputs=[*_sampling_inputs(),
                    io.Int.Input("steps_shown", default=8, min=0, max=1000,
                                 tooltip="How many steps to show, evenly spread, first and last included (0: all)."),
                    io.Combo.Input("noisy_view", options=list(NOISY_VIEWS), default=NOISY_VIEWS[1],
                                   tooltip=NOISY_VIEW_TOOLTIP),
                    io.Int.Input("cell_size", default=128, min=0, max=2048,
                                 tooltip="Size of each picture in the grid in pixels (0: the pictures' own size)."),
                    io.Vae.Input("vae", optional=True, tooltip=PICTURE_TOOLTIP)],
            outputs=[io.Image.Output(display_name="grid", tooltip="Noisy samples above, predicted clean images below."),
                     io.Latent.Output(display_name="latent", tooltip="The sampler's result, as Sample gives it."),
                     io.Latent.Output(display_name="denoised", tooltip="The estimate of the clean image at the last step.")])

    @classmethod
    def execute(cls, unet, sampler, sigmas, latent, seed, cfg, steps_shown, noisy_view, cell_size,
                positive=None, negative=None, vae=None) -> io.NodeOutput:
        if cell_size and sigmas is not None:  # refuse an oversized grid before sampling (two pictures per step)
            check_grid_size(len(evenly_spaced(sigmas.numel() - 1, steps_shown)), cell_size,
                            layout=lambda n: (2 * n, n), shown_input="steps_shown")
        sampled, latent_format = run_sampling(unet, sampler, sigmas, latent, seed, cfg, positive, negative,
                                              record=True)
        picture = latent_picture_for(latent_format, vae)
        steps = sampled.trajectory.steps
        shown = [steps[k] for k in evenly_spaced(len(steps), steps_shown)]
        noisy = noisy_picture(picture, unit_variance=noisy_view == NOISY_VIEWS[1])
        pictures = [noisy(s["x"], s["sigma"]) for s in shown] + [picture(s["denoised"]) for s in shown]
        captions = [f"step {s['i'] + 1}, sigma {s['sigma']:.3g}" for s in shown]
        captions += ["predicted clean"] * len(shown)  # the step is named above, in the same column
        grid = image_grid(pictures, captions, columns=len(shown), cell_size=cell_size)
        return io.NodeOutput(to_image_tensor(grid), to_latent(sampled.samples, latent, sampled),
                             to_latent(sampled.denoised, latent))


class AddNoise(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_AddNoise", display_name="Add Noise", category=CATEGORY,
            search_aliases=['forward process', 'noising', 'forward diffusion'],
            description="The forward process: the same noise added to a picture at each noise level of a schedule, "
                        "x = x0 + sigma * noise, side by side with sigma under each. Sampling walks this backwards.",
            inputs=[
                io.Sigmas.Input("sigmas", tooltip="The noise levels to show (a schedule node)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the noise (drawn on the CPU: the same on every device)."),
                io.Image.Input("image", optional=True,
                               tooltip="A picture (first of the batch); noise is in [-1, 1] image units, as a "
                                       "pixel-space model sees it."),
                io.Latent.Input("latent", optional=True,
                                tooltip="Or a latent (used when no image is connected), in the U-Net's units when the "
                                        "U-Net is connected."),
                UNET.Input("unet", optional=True,
                           tooltip="Optional U-Net whose latent scale and latent colours to use for a latent."),
                io.Combo.Input("noisy_view", options=list(NOISY_VIEWS), default=NOISY_VIEWS[0], tooltip=NOISY_VIEW_TOOLTIP),
                io.Int.Input("cell_size", default=128, min=0, max=2048,
                             tooltip="Size of each picture in the grid in pixels (0: the picture's own size)."),
                io.Vae.Input("vae", optional=True, tooltip=PICTURE_TOOLTIP),
            ],
            outputs=[io.Image.Output(display_name="grid", tooltip="The noisy pictures, sigma under each.")])

    @classmethod
    def execute(cls, sigmas, seed, noisy_view, cell_size, image=None, latent=None, unet=None, vae=None) -> io.NodeOutput:
        if sigmas is None or sigmas.numel() == 0:
            raise ValueError("sigmas: empty; connect a schedule")
        if image is not None:
            x0, picture = image_to_pixels(image[:1]), latent_picture()
        elif latent is not None:
            denoiser = denoiser_of(unet) if unet is not None else None
            x0 = latent["samples"][:1].float()
            if denoiser is not None:
                x0, picture = denoiser.family.latent.to_network(x0), latent_picture_for(unet.model.latent_format, vae)
            else:
                picture = latent_picture(vae_decoder(vae))
        else:
            raise ValueError("image: connect an image or a latent to add noise to")
        check_grid_size(sigmas.numel(), cell_size or max(x0.shape[-2:]), shown_input="sigmas")  # before drawing
        noise = start_noise(x0.shape, seed)
        show = noisy_picture(picture, unit_variance=noisy_view == NOISY_VIEWS[1])
        levels = [float(s) for s in sigmas.reshape(-1)]
        pictures = [show(noisy_start(x0, noise, s), s) for s in levels]
        grid = image_grid(pictures, [f"sigma {s:.3g}" for s in levels], cell_size=cell_size)
        return io.NodeOutput(to_image_tensor(grid))


SAMPLE_NODES = [Sample, DenoisingTrajectory, AddNoise]
