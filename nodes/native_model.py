"""The pack's U-Net as ComfyUI's model: a BaseModel with our network inside, its training spec and its unet_config.

ComfyUI's discrete model sampling does the preconditioning (c_in, timestep, eps / v / x0 -> denoised) from the
same noise table our Denoiser uses, so native KSampler, SamplerCustom, model patches and the memory manager work.
Both wires hold it: the DB_UNET wire's ModelPatcher, and the MODEL wire's, a clone of that one; ComfyUI's memory
manager so knows they share weights, and takes a clone's weight patches (a LoRA) off before the other runs.
"""
import comfy.model_base
import comfy.model_patcher
import comfy.supported_models_base
from comfy_api.latest import io

from ..pipeline import condition
from ..pipeline.conditioning import SIZE_HINTS
from .checks import CheckedNode
from .compat import schema
from .unet_protocol import ComfyProtocolUNet
from .wires import UNET, comfy_latent_format, model_sampling_for

CATEGORY = "diffusion_blocks/unet"
INPAINT_CHANNELS = 5  # what an SD inpainting U-Net reads besides the latent: the mask (1) and the masked image (4)
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


def comfy_unet_config(config) -> dict:
    """Our UNetConfig as ComfyUI's unet_config (its LoRA key maps and patch nodes read it): ComfyUI lists the decoder
    depths deepest-last and says None where a network takes no vector condition."""
    c = config
    return {"image_size": 32, "in_channels": c.in_channels, "out_channels": c.out_channels,
            "model_channels": c.model_channels, "num_res_blocks": list(c.num_res_blocks),
            "channel_mult": list(c.channel_mult), "transformer_depth": list(c.transformer_depth),
            "transformer_depth_output": list(reversed(c.transformer_depth_output)),
            "transformer_depth_middle": c.transformer_depth_middle, "context_dim": c.context_dim,
            "num_heads": c.num_heads, "num_head_channels": c.head_channels,
            "use_linear_in_transformer": c.linear_projection, "use_spatial_transformer": True, "legacy": False,
            "adm_in_channels": c.adm_in_channels or None, "num_classes": "sequential" if c.adm_in_channels else None}


class ModelConfig(comfy.supported_models_base.BASE):
    """ComfyUI's model config of the pack's U-Net: its unet_config as given (BASE would overwrite the heads with
    SD2.x's 64-channel ones)."""

    unet_extra_config = {}


class NoisePredictorModel(comfy.model_base.BaseModel):
    """ComfyUI's BaseModel around our network (`denoiser`: the network with its training spec, for the pack's own
    nodes); the SDXL vector y is built by the pack's own recipe."""

    def __init__(self, denoiser, device=None):
        c = denoiser.network.config
        if c.concat_channels not in (0, INPAINT_CHANNELS):
            raise ValueError(f"unet: {c.in_channels} input channels for {c.latent_channels}-channel latents: of the "
                             f"U-Nets that read more than the latent, only SD inpainting ones ({INPAINT_CHANNELS} more: "
                             f"mask and masked image) are supported")
        config = ModelConfig({**comfy_unet_config(denoiser.network.config), "disable_unet_model_creation": True})
        config.sampling_settings = sampling_settings(denoiser.spec)
        config.latent_format = comfy_latent_format(denoiser.family)
        super().__init__(config, model_type=MODEL_TYPES[denoiser.spec.prediction], device=device)
        self.model_sampling = model_sampling_for(denoiser)
        self.diffusion_model = ComfyProtocolUNet(denoiser.network)
        object.__setattr__(self, "denoiser", denoiser)  # not a submodule: its weights are diffusion_model's
        self.adm_channels = denoiser.network.config.adm_in_channels
        if denoiser.network.config.concat_channels == INPAINT_CHANNELS:
            self.set_inpaint()  # ComfyUI concatenates the mask and the masked image to the latent

    def encode_adm(self, **kwargs):
        if not self.adm_channels:
            return None
        size = (kwargs["height"], kwargs["width"])  # ComfyUI fills in the image size (8 pixels per latent pixel)
        hints = {name: kwargs[name] for name in SIZE_HINTS if name in kwargs}
        return condition(self.denoiser.family, None, kwargs.get("pooled_output"), pixel_size=size, hints=hints,
                         negative=kwargs.get("prompt_type") == "negative").y


def as_native_model(unet) -> comfy.model_patcher.ModelPatcher:
    """The MODEL wire of a DB_UNET wire: a clone of its ModelPatcher (one model, one set of weights)."""
    return unet.clone()


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
