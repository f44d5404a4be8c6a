"""ComfyUI's wires in and out of the core: the pack's DB_UNET and DB_TEXT_ENCODER wires, native CONDITIONING,
KSAMPLER, latent formats, previews.

The DB_TEXT_ENCODER wire carries a LoadedTextEncoder. The DB_UNET wire carries a comfy ModelPatcher whose `.model`
is ComfyUI's model of our network (nodes.native_model) and whose `.model.denoiser` is our Denoiser (network +
prediction type + training schedule, its family telling the latent format and the vector-condition recipe).
"""
from dataclasses import dataclass

import comfy.latent_formats
import comfy.model_management
import comfy.model_sampling
import comfy.samplers
import comfy.utils
import latent_preview
import torch
from comfy_api.latest import io

from ..networks.prediction import Cond
from ..pipeline import condition, empty_condition
from ..pipeline.conditioning import EMPTY_TEXT_TOKENS, SIZE_HINTS
from ..pipeline.part_way import PartWay
from ..views.latents import latent_picture
from .k_model import KDiffusionModel

UNET = io.Custom("DB_UNET")
PACK_CONDITIONING_KEYS = {"pooled_output", "width", "height", *SIZE_HINTS}  # what pipeline.condition reads
PART_WAY_KEY = "db_part_way"  # a LATENT entry: where a Sample that stopped above sigma 0 left its noise stream
PREDICTION_CLASSES = {"eps": comfy.model_sampling.EPS, "v": comfy.model_sampling.V_PREDICTION,
                      "x0": comfy.model_sampling.X0}


class PixelSpace(comfy.latent_formats.LatentFormat):
    """RGB pixels in [-1, 1] as the 'latent': 3 channels, scale 1; previews show the picture itself."""

    latent_channels = 3
    scale_factor = 1.0
    latent_rgb_factors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    latent_rgb_factors_bias = [0.0, 0.0, 0.0]


def model_input():
    """The noise predictor input of the sampling blocks: the pack's U-Net or any native MODEL (one socket)."""
    return io.MultiType.Input(
        "unet", types=[UNET, io.Model],
        tooltip="The noise predictor: the pack's U-Net (Load U-Net) or any native MODEL (Load Checkpoint, with its "
                "LoRAs, ControlNets and patches). Seeds, split runs and previews work the same with either.")


def denoiser_of(unet):
    """The Denoiser (network, prediction type, training schedule) of a DB_UNET wire."""
    return unet.model.denoiser


@dataclass
class LoadedTextEncoder:
    """What travels on a DB_TEXT_ENCODER wire: the encoder and the ModelPatcher that lets ComfyUI offload it."""

    encoder: object
    patcher: object
    name: str

    def ready(self):
        """The encoder, on its device (loaded through ComfyUI's memory manager)."""
        comfy.model_management.load_models_gpu([self.patcher])
        return self.encoder


def ready(unet) -> tuple:
    """Load the UNET wire's network onto ComfyUI's compute device, its weight patches (a LoRA) applied: (denoiser,
    device). Patches that act during the network's call are refused by name: this runs the network directly."""
    asked, config = call_time_patches(unet), denoiser_of(unet).network.config
    if config.concat_channels:
        raise ValueError(f"unet: an inpainting U-Net ({config.in_channels} input channels: the latent, a mask and a "
                         f"masked image) needs its mask and masked image, which this node does not give; Sample, "
                         f"Denoising Trajectory and Predict Noise do (InpaintModelConditioning)")
    if asked:
        raise ValueError(f"unet: carries model patches ({', '.join(asked)}: e.g. FreeU, PAG, a ControlNet's hooks) "
                         f"that this node does not run; Sample, Denoising Trajectory and Predict Noise do (or connect "
                         f"the MODEL to ComfyUI's KSampler)")
    comfy.model_management.load_models_gpu([unet])
    return denoiser_of(unet), unet.load_device


def call_time_patches(model) -> list[str]:
    """The names of what a MODEL wire changes while the network runs (patches, replaces, wrappers, CFG functions),
    as opposed to weight patches, which loading applies."""
    options = model.model_options
    transformer = options.get("transformer_options", {})
    asked = [name for name in ("patches", "patches_replace", "wrappers") if any(transformer.get(name, {}).values())]
    return sorted(asked + [name for name, value in options.items() if name != "transformer_options" and value])


def needs_host(model, latent: dict, *conditionings) -> str | None:
    """Why a run goes through ComfyUI's guider (nodes.host_sampling), None when the pack's own guidance does all of
    it: a native MODEL, patches acting during the call, an inpainting mask, conditioning beyond one entry of text."""
    denoiser = pack_denoiser(model)
    if denoiser is None:
        return "a native MODEL"
    if denoiser.network.config.concat_channels:
        return "an inpainting U-Net"
    patches = call_time_patches(model)
    if patches:
        return f"model patches ({', '.join(patches)})"
    if "noise_mask" in latent:
        return "an inpainting mask"
    problems = [conditioning_problem(c) for c in conditionings if c is not None]
    return next((f"conditioning that {p}" for p in problems if p), None)


def comfy_latent_format(family) -> comfy.latent_formats.LatentFormat:
    """ComfyUI's LatentFormat for a family's latents: pixel space, ComfyUI's own class of that name, or a plain one."""
    fmt = family.latent
    if fmt.pixel_space:
        return PixelSpace()
    if fmt.comfy_name:
        return getattr(comfy.latent_formats, fmt.comfy_name)()
    latent_format = comfy.latent_formats.LatentFormat()
    latent_format.latent_channels, latent_format.scale_factor = fmt.channels, fmt.scale
    return latent_format


def model_sampling_for(denoiser) -> comfy.model_sampling.ModelSamplingDiscrete:
    """ComfyUI's discrete model sampling for a Denoiser: exactly its noise table, and its sigma -> timestep map
    (continuous, or rounded to training steps when the Denoiser quantizes), so both routes feed the same t."""
    schedule, quantize = denoiser.schedule, denoiser.quantize

    class ModelSampling(comfy.model_sampling.ModelSamplingDiscrete, PREDICTION_CLASSES[denoiser.spec.prediction]):
        def timestep(self, sigma):
            t = schedule.timestep(sigma.float())
            return t.round() if quantize else t

    sampling = ModelSampling()
    sampling.set_sigmas(schedule.sigmas)
    sampling.zsnr = denoiser.spec.zero_snr
    return sampling


def text_condition(conditioning, denoiser, pixel_size: tuple[int, int], negative: bool = False) -> Cond:
    """Our Cond from native CONDITIONING of one entry (text embedding, pooled_output and the sizes ComfyUI's SDXL text
    nodes set), or the empty condition when nothing is connected; anything more is refused by name."""
    family, config = denoiser.family, denoiser.network.config
    if conditioning is None:
        return empty_condition(family, config.context_dim, pixel_size=pixel_size)
    problem = conditioning_problem(conditioning)
    if problem:
        raise ValueError(f"{'negative' if negative else 'positive'}: {problem}, which the pack's own guidance does "
                         f"not honour (ComfyUI's guider does: see nodes.wires.needs_host)")
    context, extras = conditioning[0][0], dict(conditioning[0][1])
    return condition(family, context, extras.pop("pooled_output", None), pixel_size=pixel_size, hints=extras,
                     negative=negative)


def conditioning_problem(conditioning) -> str | None:
    """What in native CONDITIONING the pack's own guidance cannot honour (None: a single entry of text, pooled text
    and sizes): more entries (Combine), or a key such as area, mask, strength, start_percent or control."""
    if not conditioning:
        return "empty; connect a text encoder's output"
    if len(conditioning) > 1:
        return f"holds {len(conditioning)} entries (a Conditioning Combine)"
    unknown = sorted(set(conditioning[0][1]) - PACK_CONDITIONING_KEYS)
    return f"carries {', '.join(unknown)}" if unknown else None


def native_conditioning(conditioning, model, name: str) -> list:
    """CONDITIONING for ComfyUI's guider: as given, or, when nothing is connected to a DB_UNET wire's node, the pack's
    empty condition (a zero text embedding, and zero pooled text where the family reads one)."""
    if conditioning is not None:
        return conditioning
    denoiser = pack_denoiser(model)
    if denoiser is None:
        raise ValueError(f"{name}: nothing connected; a native MODEL needs a text encoder's CONDITIONING here (for no "
                         f"text at all, ComfyUI's ConditioningZeroOut)")
    family = denoiser.family
    context = torch.zeros(1, EMPTY_TEXT_TOKENS, denoiser.network.config.context_dim or 1)
    return [[context, {} if family.vector is None else {"pooled_output": torch.zeros(1, family.pooled_width)}]]


def pack_denoiser(model):
    """The Denoiser of a DB_UNET wire, None for any other MODEL (a native checkpoint's)."""
    return getattr(model.model, "denoiser", None)


def pixel_size(denoiser, latent: torch.Tensor) -> tuple[int, int]:
    """The image size (height, width) in pixels that a latent of this family stands for."""
    step = denoiser.family.latent.pixels_per_latent
    return latent.shape[-2] * step, latent.shape[-1] * step


def checked_sampler(sampler) -> tuple:
    """(function, options) of a SAMPLER wire: the pack's samplers and ComfyUI's k-diffusion ones."""
    if not isinstance(sampler, comfy.samplers.KSAMPLER):
        raise ValueError(f"sampler: needs a k-diffusion sampler (ComfyUI's KSAMPLER), got {type(sampler).__name__}")
    return sampler.sampler_function, dict(sampler.extra_options)


def checked_latent(latent: dict, denoiser, masked: bool = False) -> torch.Tensor:
    """The samples of a LATENT wire that fits the network; clear errors for any other, and for an inpainting mask
    unless the node honours one (`masked`)."""
    samples = latent["samples"]
    channels = denoiser.network.config.latent_channels
    if samples.ndim != 4 or samples.shape[1] != channels:
        raise ValueError(f"latent: shape {tuple(samples.shape)} does not fit a U-Net of {channels}-channel latents "
                         f"(make it with Empty Latent from this U-Net, or encode an image for this model)")
    if "noise_mask" in latent and not masked:
        raise ValueError("latent: carries an inpainting mask (noise_mask), which this node does not use; Sample and "
                         "Denoising Trajectory honour it")
    return samples


def as_k_model(denoiser):
    """A wrapper that shows a guided model to ComfyUI's samplers as they expect their model."""
    sampling = model_sampling_for(denoiser)
    return lambda guided: KDiffusionModel(guided, sampling)


def progress_with_previews(latent_format, device, steps: int):
    """A sampler callback driving ComfyUI's progress bar (and so its Stop button) with previews of the denoised."""
    progress = comfy.utils.ProgressBar(steps)
    if isinstance(latent_format, PixelSpace):
        previewer = latent_preview.Latent2RGBPreviewer(latent_format.latent_rgb_factors,
                                                       latent_format.latent_rgb_factors_bias)
    else:
        previewer = latent_preview.get_previewer(device, latent_format)

    def report(info):
        preview = previewer.decode_latent_to_preview_image("JPEG", info["denoised"]) if previewer else None
        progress.update_absolute(info["i"] + 1, steps, preview)
    return report


def to_latent(samples: torch.Tensor, latent: dict, sampled=None) -> dict:
    """A LATENT wire like `latent` (its other entries kept) carrying `samples` on ComfyUI's intermediate device, and,
    when `sampled` (a pipeline run) stopped above sigma 0, where its noise stream stood (PART_WAY_KEY)."""
    out = {key: value for key, value in latent.items() if key != PART_WAY_KEY}
    out["samples"] = samples.float().to(comfy.model_management.intermediate_device())
    so_far = sampled.part_way(out["samples"]) if sampled is not None else None
    if so_far is not None:
        out[PART_WAY_KEY] = so_far
    return out


def first_item(latent: dict) -> dict:
    """A LATENT wire of its first batch item (its other entries, an inpainting mask, kept)."""
    return {key: value[:1] if key == "samples" else value for key, value in latent.items()}


def part_way(latent: dict, sigmas: torch.Tensor) -> PartWay | None:
    """The run a latent continues: the record of a Sample that stopped part-way at this schedule's first sigma with
    these very samples (None otherwise, e.g. when another node changed the samples since)."""
    carried = latent.get(PART_WAY_KEY)
    return carried if isinstance(carried, PartWay) and carried.continues(latent["samples"], sigmas) else None


def vae_decoder(vae, latent_format=None):
    """Latents in a model's units (ComfyUI's process_in) -> image through a native VAE (None without one)."""
    if vae is None:
        return None
    return lambda t: vae.decode(latent_format.process_out(t) if latent_format is not None else t)


def latent_picture_for(latent_format, vae=None):
    """Latent in a model's units -> picture: through the VAE, else the format's linear RGB preview, else its
    channels."""
    return latent_picture(vae_decoder(vae, latent_format), getattr(latent_format, "latent_rgb_factors", None),
                          getattr(latent_format, "latent_rgb_factors_bias", None))
