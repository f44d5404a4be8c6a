"""The pack's U-Net as a native ComfyUI MODEL: ComfyUI's BaseModel with our network inside and its training spec.

ComfyUI's discrete model sampling does the preconditioning (c_in, timestep, eps / v / x0 -> denoised) from the
same noise table our Denoiser uses, so native KSampler, SamplerCustom, model patches and the memory manager work.
"""
import comfy.model_base
import comfy.model_patcher
import comfy.supported_models_base
import torch
from comfy_api.latest import io

from .checks import CheckedNode
from .compat import schema
from .wires import UNET, comfy_latent_format, model_sampling_for, text_condition

CATEGORY = "diffusion_blocks/unet"
MODEL_TYPES = {"eps": comfy.model_base.ModelType.EPS, "v": comfy.model_base.ModelType.V_PREDICTION,
               "x0": comfy.model_base.ModelType.EPS}  # ComfyUI has no discrete-x0 type; the sampling object decides
# Our beta schedule names -> ComfyUI's (its "linear" is linear in sqrt(beta)); the table is set exactly anyway.
COMFY_BETA_SCHEDULES = {"scaled_linear": "linear", "linear": "sqrt_linear", "cosine": "cosine"}


def sampling_settings(spec):
    settings = {"linear_start": spec.beta_start, "linear_end": spec.beta_end, "timesteps": spec.timesteps,
                "zsnr": spec.zero_snr}
    if spec.beta_schedule in COMFY_BETA_SCHEDULES:
        settings["beta_schedule"] = COMFY_BETA_SCHEDULES[spec.beta_schedule]
    return settings


class NetworkCall(torch.nn.Module):
    """ComfyUI's diffusion_model call shape (x, t, context, y, control, transformer_options) -> our UNet(x, t, context, y)."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    @property
    def dtype(self):
        return next(self.network.parameters()).dtype

    def forward(self, x, timesteps, context=None, y=None, control=None, transformer_options=None, **kwargs):
        if control is not None:
            raise ValueError("model: ControlNets are not supported by the pack's U-Net")
        return self.network(x, timesteps, context, y)


class NoisePredictorModel(comfy.model_base.BaseModel):
    """ComfyUI's BaseModel around our network; the SDXL vector y is built by the pack's own recipe."""

    def __init__(self, denoiser, device=None):
        config = comfy.supported_models_base.BASE({"disable_unet_model_creation": True})
        config.sampling_settings = sampling_settings(denoiser.spec)
        config.latent_format = comfy_latent_format(denoiser.family)
        super().__init__(config, model_type=MODEL_TYPES[denoiser.spec.prediction], device=device)
        self.model_sampling = model_sampling_for(denoiser)
        self.diffusion_model = NetworkCall(denoiser.network)
        self.denoiser = denoiser
        self.adm_channels = denoiser.network.config.adm_in_channels

    def encode_adm(self, **kwargs):
        if not self.adm_channels:
            return None
        size = (kwargs["height"], kwargs["width"])  # ComfyUI fills in the image size (8 pixels per latent pixel)
        negative = kwargs.get("prompt_type") == "negative"
        return text_condition([[None, kwargs]], self.denoiser, size, negative=negative).y


def as_native_model(unet) -> comfy.model_patcher.ModelPatcher:
    """A ComfyUI ModelPatcher (MODEL) sharing the DB_UNET wire's network, devices and weights."""
    model = NoisePredictorModel(unet.model)
    return comfy.model_patcher.ModelPatcher(model, load_device=unet.load_device, offload_device=unet.offload_device)


class NoisePredictorAsModel(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_NoisePredictorAsModel", display_name="Noise Predictor as MODEL", category=CATEGORY,
            search_aliases=['unet to model', 'native model', 'ksampler model'],
            description="The pack's U-Net as a native ComfyUI MODEL, with its prediction type (eps / v / x0) and "
                        "training noise schedule, so ComfyUI's own KSampler, SamplerCustom, schedulers and model "
                        "patches drive it. The weights are shared with the U-Net wire, not copied.",
            inputs=[UNET.Input("unet", tooltip="The noise predictor (from Load U-Net).")],
            outputs=[io.Model.Output(display_name="model",
                                     tooltip="A native MODEL: connect to KSampler, SamplerCustom, model patches.")])

    @classmethod
    def execute(cls, unet) -> io.NodeOutput:
        return io.NodeOutput(as_native_model(unet))


NATIVE_MODEL_NODES = [NoisePredictorAsModel]
