"""Sampling with the pack's U-Net, and watching it: Sample, Denoising Trajectory, Add Noise."""
from types import SimpleNamespace

import torch
from comfy_api.latest import io

from ..samplers.run import Guided, evenly_spaced, noisy_start, sample, start_noise
from ..views.grid import image_grid
from .images import to_image_tensor
from .unet_nodes import UNET, _channels_picture, cond_from_conditioning, empty_cond, ready

CATEGORY = "diffusion_blocks/sampling"
NOISY_VIEWS = ("x0 + sigma * noise", "x / sqrt(1 + sigma^2)")
NOISY_VIEW_TOOLTIP = ("How a noisy sample is drawn: as it is (x0 + sigma * noise, clipped to the picture's range: "
                      "the image drowns in noise as sigma grows) or scaled to unit variance (x / sqrt(1 + sigma^2), "
                      "what the network is fed: the image fades into noise).")
PICTURE_TOOLTIP = ("Optional native VAE to turn latents into pictures. Without it, pixel-space latents are shown as "
                   "they are and SD latents through a cheap linear RGB approximation (colours only roughly right).")


def _sampling_inputs():
    """The inputs Sample and Denoising Trajectory share."""
    return [
        UNET.Input("unet", tooltip="The noise predictor (from Load U-Net)."),
        io.Sampler.Input("sampler", tooltip="How to step: one of the pack's sampler nodes or ComfyUI's KSamplerSelect "
                                            "(any k-diffusion sampler)."),
        io.Sigmas.Input("sigmas", tooltip="The noise levels to step through, highest first (a schedule node). The "
                                          "first decides how much noise is added to the latent."),
        io.Latent.Input("latent", tooltip="Where to start: an empty latent (Empty Latent) for a new image, or an "
                                          "encoded image for image-to-image (noise of the first sigma is added)."),
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="Seed of the start noise and of stochastic samplers (drawn on the CPU: the same image "
                             "on every device)."),
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


class SamplerModel:
    """Our guided denoiser as ComfyUI's k-diffusion samplers see their model: a callable carrying the model
    sampling they look up (model.inner_model.inner_model.model_sampling, model.inner_model.model_patcher)."""

    def __init__(self, guided, model_sampling):
        self.guided = guided
        patcher = SimpleNamespace(get_model_object={"model_sampling": model_sampling}.__getitem__)
        self.inner_model = SimpleNamespace(inner_model=SimpleNamespace(model_sampling=model_sampling),
                                           model_patcher=patcher)

    def __call__(self, x, sigma, model_options=None, **extra_args):
        if (model_options or {}).get("sampler_post_cfg_function"):
            raise ValueError("sampler: ComfyUI's CFG++ samplers need ComfyUI's own guidance; connect Noise Predictor "
                             "as MODEL to SamplerCustom instead")
        return self.guided(x, sigma)


def _checked_sampler(sampler):
    import comfy.samplers

    if not isinstance(sampler, comfy.samplers.KSAMPLER):
        raise ValueError(f"sampler: needs a k-diffusion sampler (ComfyUI's KSAMPLER), got {type(sampler).__name__}")
    return sampler.sampler_function, dict(sampler.extra_options)


def _checked_latent(latent, denoiser):
    samples = latent["samples"]
    channels = denoiser.network.config.in_channels
    if samples.ndim != 4 or samples.shape[1] != channels:
        raise ValueError(f"latent: shape {tuple(samples.shape)} does not fit a U-Net of {channels} input channels "
                         f"(make it with Empty Latent from this U-Net, or encode an image for this model)")
    if "noise_mask" in latent:
        raise ValueError("latent: carries an inpainting mask (noise_mask), which Sample does not use; connect Noise "
                         "Predictor as MODEL to ComfyUI's KSampler for inpainting")
    return samples


def _previewer(denoiser, device):
    """ComfyUI's previewer for these latents: the picture itself in pixel space, else ComfyUI's chosen method."""
    import latent_preview

    from .native_model import PixelSpace, is_pixel_space, latent_format_for

    if is_pixel_space(denoiser):
        return latent_preview.Latent2RGBPreviewer(PixelSpace.latent_rgb_factors, PixelSpace.latent_rgb_factors_bias)
    return latent_preview.get_previewer(device, latent_format_for(denoiser))


def run_sampling(unet, sampler, sigmas, latent, seed, cfg, positive=None, negative=None, record=False):
    """Sample with the DB_UNET wire; returns (latent, denoised latent, trajectory, denoiser), latents in LATENT units."""
    import comfy.model_management
    import comfy.utils

    from .native_model import model_sampling_for, pixels_per_latent

    if sigmas is None or sigmas.numel() == 0:
        raise ValueError("sigmas: empty; connect a schedule")
    fn, options = _checked_sampler(sampler)
    denoiser, device = ready(unet)
    samples = _checked_latent(latent, denoiser)
    config, scale = denoiser.network.config, denoiser.spec.latent_scale
    pixel_size = tuple(s * pixels_per_latent(denoiser) for s in samples.shape[-2:])
    cond = cond_from_conditioning(positive, config, pixel_size) if positive is not None else empty_cond(config, pixel_size)
    uncond = (cond_from_conditioning(negative, config, pixel_size, negative=True) if negative is not None
              else empty_cond(config, pixel_size))
    cond, uncond = (type(c)(*(None if t is None else t.to(device) for t in (c.context, c.y))) for c in (cond, uncond))
    model = SamplerModel(Guided(denoiser, cond, uncond, cfg), model_sampling_for(denoiser))

    steps = sigmas.numel() - 1
    progress, previewer = comfy.utils.ProgressBar(steps), _previewer(denoiser, device)

    def report(info):
        preview = previewer.decode_latent_to_preview_image("JPEG", info["denoised"]) if previewer else None
        progress.update_absolute(info["i"] + 1, steps, preview)

    x0 = samples.float().to(device) * scale
    out, denoised, trajectory = sample(fn, model, x0, sigmas, seed, callback=report, options=options, record=record)
    to_latent = lambda t: {**latent, "samples": (t.float() / scale).to(comfy.model_management.intermediate_device())}  # noqa: E731
    return to_latent(out), to_latent(denoised), trajectory, denoiser


class Sample(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DB_Sample", display_name="Sample", category=CATEGORY,
            description="Make an image with the pack's U-Net: start from noise of the first sigma (added to the "
                        "latent), and let the sampler remove a little noise at each level of the schedule, the "
                        "noise predictor guided by the prompts. Works with the pack's samplers and ComfyUI's own.",
            inputs=_sampling_inputs(),
            outputs=[io.Latent.Output(display_name="latent", tooltip="The sampler's result (its last step)."),
                     io.Latent.Output(display_name="denoised",
                                      tooltip="The network's estimate of the clean image at the last step.")])

    @classmethod
    def execute(cls, unet, sampler, sigmas, latent, seed, cfg, positive=None, negative=None):
        out, denoised, _, _ = run_sampling(unet, sampler, sigmas, latent, seed, cfg, positive, negative)
        return io.NodeOutput(out, denoised)


def picture_maker(latent_format, vae, scale):
    """Network-space latent (B, C, H, W) -> (H, W, 3) picture in [0, 1] of its first item: through the VAE, through
    the latent format's linear RGB factors (exact in pixel space), or the first channels as colours."""
    def picture(t):
        t = t[:1].float().cpu()
        if vae is not None:
            return vae.decode(t / scale)[0].float().cpu().clamp(0, 1).numpy()
        factors = getattr(latent_format, "latent_rgb_factors", None)
        if factors is None:
            return _channels_picture(t)
        bias = latent_format.latent_rgb_factors_bias or [0.0, 0.0, 0.0]
        rgb = t[0].movedim(0, -1) @ torch.tensor(factors) + torch.tensor(bias)
        return ((rgb + 1) / 2).clamp(0, 1).numpy()
    return picture


def noisy_picture(picture, view):
    """A noisy sample x at level sigma drawn as the chosen view (see NOISY_VIEWS)."""
    def show(x, sigma):
        return picture(x / (sigma**2 + 1) ** 0.5 if view == NOISY_VIEWS[1] else x)
    return show


class DenoisingTrajectory(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DB_DenoisingTrajectory", display_name="Denoising Trajectory", category=CATEGORY,
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
                positive=None, negative=None, vae=None):
        from .native_model import latent_format_for

        out, denoised, trajectory, denoiser = run_sampling(unet, sampler, sigmas, latent, seed, cfg, positive, negative,
                                                           record=True)
        picture = picture_maker(latent_format_for(denoiser), vae, denoiser.spec.latent_scale)
        shown = [trajectory.steps[k] for k in evenly_spaced(len(trajectory.steps), steps_shown)]
        noisy = noisy_picture(picture, noisy_view)
        pictures = [noisy(s["x"], s["sigma"]) for s in shown] + [picture(s["denoised"]) for s in shown]
        captions = [f"step {s['i'] + 1}, sigma {s['sigma']:.3g}" for s in shown]
        captions += ["predicted clean"] * len(shown)  # the step is named above, in the same column
        grid = image_grid(pictures, captions, columns=len(shown), cell_size=cell_size)
        return io.NodeOutput(to_image_tensor(grid), out, denoised)


class AddNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DB_AddNoise", display_name="Add Noise", category=CATEGORY,
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
    def execute(cls, sigmas, seed, noisy_view, cell_size, image=None, latent=None, unet=None, vae=None):
        from .latent_nodes import image_to_pixels
        from .native_model import PixelSpace, latent_format_for

        if sigmas is None or sigmas.numel() == 0:
            raise ValueError("sigmas: empty; connect a schedule")
        if image is not None:
            x0, latent_format, scale = image_to_pixels(image[:1]), PixelSpace(), 1.0
        elif latent is not None:
            scale = unet.model.spec.latent_scale if unet is not None else 1.0
            x0 = latent["samples"][:1].float() * scale
            latent_format = (latent_format_for(unet.model) if unet is not None
                             else PixelSpace() if x0.shape[1] == 3 else None)
        else:
            raise ValueError("image: connect an image or a latent to add noise to")
        noise = start_noise(x0.shape, seed)
        show = noisy_picture(picture_maker(latent_format, None if image is not None else vae, scale), noisy_view)
        levels = [float(s) for s in sigmas.reshape(-1)]
        pictures = [show(noisy_start(x0, noise, s), s) for s in levels]
        grid = image_grid(pictures, [f"sigma {s:.3g}" for s in levels], cell_size=cell_size)
        return io.NodeOutput(to_image_tensor(grid))


SAMPLE_NODES = [Sample, DenoisingTrajectory, AddNoise]
