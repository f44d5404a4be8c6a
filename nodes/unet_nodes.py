"""The U-Net noise predictor as nodes: load it (wrapped for ComfyUI's memory manager) and watch it predict noise.

The UNET wire carries a comfy ModelPatcher whose `.model` is our Denoiser (network + prediction type +
training schedule); `ready(unet)` loads it onto the compute device and returns (denoiser, device).
"""
import torch
from comfy_api.latest import io

from ..networks.prediction import Cond, Denoiser
from ..networks.sdxl_conditioning import sdxl_vector
from ..networks.unet.conditioning import NEGATIVE_SCORE, PROMPT_SCORE, refiner_vector
from ..networks.unet_loading import load_unet
from ..views.grid import image_grid
from .images import to_image_tensor
from .model_files import PACK_FOLDER, model_file_options, resolve_model_file

CATEGORY = "diffusion_blocks/unet"
FOLDERS = (PACK_FOLDER, "checkpoints", "diffusion_models")
UNET = io.Custom("DB_UNET")
LATENT_TO_PIXELS = 8  # the SD autoencoders downsample 8x (Rombach et al. 2022)
SDXL_ADM, REFINER_ADM = 2816, 2560  # vector widths: pooled bigG text (1280) + 6 or 5 size/crop/score embeddings
POOLED_TEXT = 1280
EMPTY_TEXT_TOKENS = 77  # CLIP's context length: the width of a text embedding when no prompt is connected


def ready(unet):
    """Load the UNET wire's network onto ComfyUI's compute device: (denoiser, device)."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([unet])
    return unet.model, unet.load_device


def cond_from_conditioning(conditioning, config, pixel_size, negative=False):
    """Our Cond from native CONDITIONING (its first entry): the text embedding and, for SDXL networks, the vector y
    built from the pooled text and the sizes the conditioning carries (width, height, crop_w, crop_h, target_width,
    target_height, aesthetic_score, as ComfyUI's SDXL text nodes set them), else the image's (height, width)."""
    if not conditioning:
        raise ValueError("conditioning: empty; connect a text encoder's output")
    context, extras = conditioning[0][0], conditioning[0][1]
    if not config.adm_in_channels:
        return Cond(context)
    pooled = extras.get("pooled_output")
    if pooled is None:
        raise ValueError("conditioning: this SDXL-type U-Net needs the pooled text (pooled_output), which this "
                         "conditioning does not carry; use an SDXL text encoder")
    height, width = extras.get("height", pixel_size[0]), extras.get("width", pixel_size[1])
    crop = dict(crop_w=extras.get("crop_w", 0), crop_h=extras.get("crop_h", 0))
    if config.adm_in_channels == SDXL_ADM:
        y = sdxl_vector(pooled, width, height, **crop, target_width=extras.get("target_width", width),
                        target_height=extras.get("target_height", height))
    elif config.adm_in_channels == REFINER_ADM:
        score = extras.get("aesthetic_score", NEGATIVE_SCORE if negative else PROMPT_SCORE)
        y = refiner_vector(pooled, width, height, **crop, aesthetic_score=score)
    else:
        raise ValueError(f"conditioning: no recipe for a vector condition of width {config.adm_in_channels}")
    return Cond(context, y)


def empty_cond(config, pixel_size):
    """The conditioning of no prompt at all: zero text embedding (and zero pooled text for SDXL)."""
    context = torch.zeros(1, EMPTY_TEXT_TOKENS, config.context_dim) if config.context_dim else None
    if not config.adm_in_channels:
        return Cond(context)
    empty = [[context, {"pooled_output": torch.zeros(1, POOLED_TEXT)}]]
    return cond_from_conditioning(empty, config, pixel_size)


class LoadUNet(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DB_LoadUNet", display_name="Load U-Net", category=CATEGORY,
            description="Load a Stable Diffusion U-Net (SD1.x, SD2.x, SDXL base or refiner) or the pack's bundled "
                        "text-to-image model into the pack's own noise predictor, from a full checkpoint or a "
                        "U-Net-only file. The architecture is read "
                        "from the weights; ComfyUI's memory manager moves it to the GPU and back.",
            inputs=[
                io.Combo.Input("unet_name", options=model_file_options(FOLDERS),
                               tooltip="diffusion_blocks/: the pack's bundled 64x64 shapes model (and models/"
                                       "diffusion_blocks); a file in models/checkpoints (a full checkpoint: only its "
                                       "U-Net is read) or models/diffusion_models (a U-Net on its own, original or "
                                       "diffusers keys)."),
                io.Combo.Input("weight_dtype", options=["default", "fp32", "fp16", "bf16"], default="default",
                               tooltip="Precision of the weights: default is ComfyUI's choice for this device "
                                       "(fp16 on most GPUs, fp32 on the CPU)."),
                io.Combo.Input("prediction", options=["auto", "eps", "v", "x0"], default="auto",
                               tooltip="What the network predicts: auto trusts the checkpoint where it tells "
                                       "(e.g. SD2.x 768-v), else the family's default (eps). eps: the noise; "
                                       "v: the velocity (Salimans & Ho 2022); x0: the clean image."),
                io.Combo.Input("zero_snr", options=["auto", "off", "on"], default="auto",
                               tooltip="Was it trained with a zero-terminal-SNR schedule (Lin et al. 2024)? auto "
                                       "trusts the checkpoint; 'on' needs v or x0 prediction."),
            ],
            outputs=[UNET.Output(display_name="unet", tooltip="The noise predictor with its prediction type and "
                                                              "training schedule.")])

    @classmethod
    def execute(cls, unet_name, weight_dtype, prediction, zero_snr):
        import comfy.model_management
        import comfy.model_patcher

        path = resolve_model_file(unet_name, FOLDERS, "unet_name")
        dtype = comfy.model_management.unet_dtype() if weight_dtype == "default" else weight_dtype
        offload = comfy.model_management.unet_offload_device()
        network = load_unet(path, dtype=dtype, device=offload, prediction=None if prediction == "auto" else prediction,
                            zero_snr=None if zero_snr == "auto" else zero_snr == "on")
        patcher = comfy.model_patcher.ModelPatcher(Denoiser(network), load_device=comfy.model_management.get_torch_device(),
                                                   offload_device=offload)
        return io.NodeOutput(patcher)


class PredictNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DB_PredictNoise", display_name="Predict Noise", category=CATEGORY,
            description="What the noise predictor does, in one picture: noise of level sigma is added to a latent, "
                        "the network guesses that noise, and subtracting the guess gives its estimate of the clean "
                        "image. Shows clean input, noisy input, predicted noise and predicted clean side by side.",
            inputs=[
                UNET.Input("unet", tooltip="The noise predictor (from Load U-Net)."),
                io.Latent.Input("latent", tooltip="The clean latent to add noise to (the first of the batch is used); "
                                                  "e.g. a VAE-encoded image."),
                io.Float.Input("sigma", default=1.0, min=0.0, max=5000.0, step=0.01, round=False,
                               tooltip="Noise level: x = clean + sigma * noise (SD1.x's range is 0.03 to 14.6)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the added noise (drawn on the CPU: the same on every device)."),
                io.Conditioning.Input("positive", optional=True,
                                      tooltip="Optional text conditioning the prediction follows (none: an empty prompt)."),
                io.Vae.Input("vae", optional=True,
                             tooltip="Optional VAE to show latents as pictures (else the first three latent "
                                     "channels are shown as colours)."),
            ],
            outputs=[io.Image.Output(display_name="grid", tooltip="Clean, noisy, predicted noise, predicted clean.")])

    @classmethod
    def execute(cls, unet, latent, sigma, seed, positive=None, vae=None):
        denoiser, device = ready(unet)
        config, scale = denoiser.network.config, denoiser.spec.latent_scale
        clean = latent["samples"][:1].float()
        if clean.ndim != 4 or clean.shape[1] != config.in_channels:
            raise ValueError(f"latent: shape {tuple(clean.shape)} does not fit a U-Net of {config.in_channels} input channels")
        pixel_size = (clean.shape[-2] * LATENT_TO_PIXELS, clean.shape[-1] * LATENT_TO_PIXELS)
        cond = cond_from_conditioning(positive, config, pixel_size) if positive is not None else empty_cond(config, pixel_size)
        x0 = clean * scale
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
        x = x0 + sigma * noise
        cond = Cond(*(None if t is None else t.to(device) for t in (cond.context, cond.y)))
        with torch.no_grad():
            denoised = denoiser(x.to(device), sigma, cond).float().cpu()
        predicted_noise = (x - denoised) / sigma if sigma > 0 else torch.zeros_like(x)
        show = _decoder(vae, scale)
        pictures = [show(x0), show(x / (sigma**2 + 1) ** 0.5), _noise_picture(predicted_noise), show(denoised)]
        captions = ["clean", f"noisy, sigma {sigma:g}", "predicted noise", "predicted clean"]
        grid = image_grid(pictures, captions, cell_size=max(256, max(p.shape[0] for p in pictures)))
        return io.NodeOutput(to_image_tensor(grid))


def _decoder(vae, scale):
    """Network-space latent -> (H, W, 3) picture in [0, 1]: through the VAE, or its first channels as colours."""
    def show(t):
        if vae is not None:
            return vae.decode(t / scale)[0].float().cpu().clamp(0, 1).numpy()
        return _channels_picture(t)
    return show


def _channels_picture(t):
    """The first three channels as RGB; pixel-space images (3 channels in [-1, 1]) as they are."""
    t = t[0].float()
    if t.shape[0] == 3:
        return ((t + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()
    rgb = t[:3] if t.shape[0] >= 3 else t[:1].expand(3, -1, -1)
    low, high = rgb.amin(dim=(1, 2), keepdim=True), rgb.amax(dim=(1, 2), keepdim=True)
    return ((rgb - low) / (high - low).clamp_min(1e-6)).permute(1, 2, 0).numpy()


def _noise_picture(noise):
    """Standard-normal noise as colours: 0 is grey, +-3 standard deviations are the extremes."""
    rgb = noise[0, :3] if noise.shape[1] >= 3 else noise[0, :1].expand(3, -1, -1)
    return (0.5 + rgb / 6).clamp(0, 1).permute(1, 2, 0).numpy()


UNET_NODES = [LoadUNet, PredictNoise]
