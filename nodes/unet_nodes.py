"""The U-Net noise predictor as nodes: load it (wrapped for ComfyUI's memory manager) and watch it predict noise.

The UNET wire carries a comfy ModelPatcher of ComfyUI's model of our network (nodes.native_model), whose `.denoiser`
is the network with its prediction type and training schedule; `ready(unet)` loads it onto the compute device and
returns (denoiser, device).
"""
import sys

import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.patcher_extension
from comfy_api.latest import io
from comfy_execution.utils import get_executing_context

from ..networks.prediction import Denoiser
from ..networks.unet.fast import SPEEDS, FastUNet, with_speed
from ..networks.unet_loading import load_unet
from ..pipeline import predict_noise
from ..views.grid import image_grid
from ..views.latents import noise_picture
from .checks import CheckedNode
from .compat import schema
from .images import to_image_tensor
from .model_files import PACK_FOLDER, model_file_options, resolve_model_file
from .native_model import NoisePredictorModel
from .host_sampling import predict_on_host
from .wires import (UNET, checked_latent, first_item, latent_picture_for, model_input, needs_host,
                    pack_denoiser, pixel_size, ready, text_condition)

CATEGORY = "diffusion_blocks/unet"
FOLDERS = (PACK_FOLDER, "checkpoints", "diffusion_models")
# ComfyUI's layer classes, as its own U-Net's (in the weights' dtype): when ComfyUI loads the model partially (low VRAM)
# it casts the layers that stay behind to the compute device layer by layer, their weight patches (a LoRA) applied
OPERATIONS = comfy.ops.disable_weight_init
SPEED_TOOLTIP = (
    "How the network runs. standard: plain PyTorch, nothing to wait for. compiled: torch.compile with channels-last "
    "activations, fused GroupNorm+SiLU, one fused QKV projection and the prompt's cross-attention keys/values made "
    "once per run; made for the GPU, where the first run at each image size and batch compiles first (it can take a "
    "minute or more; 'compiling...' shows on the running node), and the fused attention weights take a little extra "
    "GPU memory. compiled + CUDA graphs: also records each whole sampling step (both prompts and the guidance) as one "
    "CUDA graph and replays it (meant to be the fastest), a few seconds more on the first run at a size, and it keeps "
    "that step's working memory reserved (up to 6 sizes) until ComfyUI unloads the model; without CUDA it runs as "
    "compiled.")


class LoadUNet(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_LoadUNet", display_name="Load U-Net", category=CATEGORY,
            search_aliases=['unet loader', 'diffusion model', 'load model', 'noise predictor'],
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
                # optional, so that workflows saved before it existed (API format included) load unchanged
                io.Combo.Input("speed", options=list(SPEEDS), default=SPEEDS[0], optional=True, tooltip=SPEED_TOOLTIP),
            ],
            outputs=[UNET.Output(display_name="unet", tooltip="The noise predictor with its prediction type and "
                                                              "training schedule.")])

    @classmethod
    def execute(cls, unet_name, weight_dtype, prediction, zero_snr, speed=SPEEDS[0]) -> io.NodeOutput:
        path = resolve_model_file(unet_name, FOLDERS, "unet_name")
        dtype = comfy.model_management.unet_dtype() if weight_dtype == "default" else weight_dtype
        offload = comfy.model_management.unet_offload_device()
        network = load_unet(path, dtype=dtype, device=offload, prediction=None if prediction == "auto" else prediction,
                            zero_snr=None if zero_snr == "auto" else zero_snr == "on", operations=OPERATIONS)
        return io.NodeOutput(unet_wire(network, speed))


def unet_wire(network, speed=SPEEDS[0]):
    """The DB_UNET wire for a network at a speed setting: a ModelPatcher around ComfyUI's model of it. A fast network
    shows 'compiling...' on the running node while it compiles, and drops its CUDA graphs and prepared weights
    whenever ComfyUI unloads the model (they would point at memory the weights have left)."""
    network = with_speed(network, speed, on_compile=say_on_running_node)
    patcher = comfy.model_patcher.ModelPatcher(NoisePredictorModel(Denoiser(network)),
                                               load_device=comfy.model_management.get_torch_device(),
                                               offload_device=comfy.model_management.unet_offload_device())
    if isinstance(network, FastUNet):
        patcher.add_callback(comfy.patcher_extension.CallbacksMP.ON_DETACH, lambda *_: network.release())
    return patcher


def say_on_running_node(message):
    """A line of text on the node ComfyUI is running (its progress text), e.g. while the U-Net compiles; nothing
    when no server runs (ComfyUI's `server` module is the running server's, looked up, never imported from here)."""
    running = get_executing_context()
    server = getattr(getattr(sys.modules.get("server"), "PromptServer", None), "instance", None)
    if running is not None and server is not None:
        server.send_progress_text(f"{message}...", running.node_id)


class PredictNoise(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_PredictNoise", display_name="Predict Noise", category=CATEGORY,
            search_aliases=['noise prediction', 'eps', 'denoiser'],
            description="What the noise predictor does, in one picture: noise of level sigma is added to a latent, "
                        "the network guesses that noise, and subtracting the guess gives its estimate of the clean "
                        "image. Shows clean input, noisy input, predicted noise and predicted clean side by side.",
            inputs=[
                model_input(),
                io.Latent.Input("latent", tooltip="The clean latent to add noise to (the first of the batch is used); "
                                                  "e.g. a VAE-encoded image."),
                io.Float.Input("sigma", default=1.0, min=0.0, max=5000.0, step=0.01, round=False,
                               tooltip="Noise level: x = clean + sigma * noise (SD1.x's range is 0.03 to 14.6)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the added noise (drawn on the CPU: the same on every device)."),
                io.Conditioning.Input("positive", optional=True,
                                      tooltip="Optional text conditioning the prediction follows (none: an empty prompt)."),
                io.Vae.Input("vae", optional=True,
                             tooltip="Optional VAE to show latents as pictures (else pixel-space latents are shown "
                                     "as they are and SD latents through a linear RGB approximation)."),
            ],
            outputs=[io.Image.Output(display_name="grid", tooltip="Clean, noisy, predicted noise, predicted clean.")])

    @classmethod
    def execute(cls, unet, latent, sigma, seed, positive=None, vae=None) -> io.NodeOutput:
        seen = look_at(unet, first_item(latent), sigma, seed, positive)
        show = latent_picture_for(unet.get_model_object("latent_format"), vae)
        pictures = [show(seen.clean), show(seen.noisy / (sigma**2 + 1) ** 0.5), noise_picture(seen.noise),
                    show(seen.denoised)]
        captions = ["clean", f"noisy, sigma {sigma:g}", "predicted noise", "predicted clean"]
        grid = image_grid(pictures, captions, cell_size=max(256, max(p.shape[0] for p in pictures)))
        return io.NodeOutput(to_image_tensor(grid))


def look_at(unet, latent: dict, sigma: float, seed: int, positive):
    """Predict Noise's NoisePrediction: the pack's own path where it honours everything, else ComfyUI's guider."""
    denoiser = pack_denoiser(unet)
    if needs_host(unet, latent, positive) is None:
        denoiser, device = ready(unet)
        clean = checked_latent(latent, denoiser)
        cond = text_condition(positive, denoiser, pixel_size(denoiser, clean))
        return predict_noise(denoiser, clean, sigma, seed, cond, device)
    if denoiser is not None:
        checked_latent(latent, denoiser, masked=True)
    return predict_on_host(unet, latent, sigma, seed, positive)


UNET_NODES = [LoadUNet, PredictNoise]
