"""What a model family is, in one record: its U-Net, how it was trained, how it reads text, the latents it
works on and the vector condition its U-Net reads.

Detection (unet/detect.py), loading (unet_loading.py, text_encoder_loading.py), the Denoiser
(prediction.py: `denoiser.family`) and the nodes read these records; adding a family is adding one
record to FAMILIES (and its test).
"""
import dataclasses
from dataclasses import dataclass

from .clip_text import ARCHITECTURES, END_TOKEN
from .sdxl_conditioning import REFINER_VECTOR, SDXL_VECTOR, recipe_for_width
from .training_spec import TrainingSpec
from .unet.config import UNetConfig, _preset

LATENT_TO_PIXELS = 8  # the SD autoencoders downsample 8x (Rombach et al. 2022)
# The U-Net fields that, heads and in/out channels aside, fix a published architecture (an inpainting
# U-Net reads extra input channels, and the heads cannot be read from weights).
STRUCTURE_FIELDS = ("model_channels", "channel_mult", "num_res_blocks", "transformer_depth", "transformer_depth_output",
                    "transformer_depth_middle", "context_dim", "linear_projection", "adm_in_channels")


@dataclass(frozen=True)
class LatentFormat:
    """How a family's images are represented for its network: network units = scale * (VAE latent - shift).

    comfy_name: the comfy.latent_formats class with the same numbers ("SD15", "SDXL"), None for none (a name
    only: the core does not import ComfyUI).
    """

    channels: int
    scale: float
    shift: float = 0.0
    pixels_per_latent: int = LATENT_TO_PIXELS
    comfy_name: str | None = None

    @property
    def pixel_space(self):
        """RGB pixels in [-1, 1] are the latent itself (no autoencoder)."""
        return self.channels == 3 and self.pixels_per_latent == 1 and self.scale == 1

    def to_network(self, latent):
        """VAE latent (or pixels) -> network units."""
        return (latent - self.shift) * self.scale if self.shift else latent * self.scale

    def from_network(self, x):
        """Network units -> VAE latent (or pixels)."""
        return x / self.scale + self.shift if self.shift else x / self.scale


@dataclass(frozen=True)
class TowerUse:
    """How a model reads one CLIP tower: layer (-1 last, -2 penultimate), final norm on it or not, padding token."""

    name: str
    architecture: str  # a tower shape of clip_text.ARCHITECTURES
    layer: int
    norm_hidden: bool
    pad: int

    @property
    def embedding_key(self):
        """The entry of a textual-inversion file meant for this tower."""
        return self.architecture

    @property
    def width(self):
        return ARCHITECTURES[self.architecture].width


@dataclass(frozen=True)
class TextConditioning:
    """A family's text conditioning: its towers (concatenated in this order) and which gives the pooled output.

    unet_reads_pooled: SDXL's U-Net reads the pooled output (its class vector y); SD1's and SD2's do not.
    """

    name: str
    description: str
    towers: tuple
    pooled_from: str
    pooled_projected: bool
    unet_reads_pooled: bool = False

    @property
    def width(self):
        """The text embedding's width: the towers' side by side (the U-Net's context_dim)."""
        return sum(use.width for use in self.towers)

    @property
    def pooled_width(self):
        """The pooled output's width (projected or not)."""
        config = ARCHITECTURES[next(use for use in self.towers if use.name == self.pooled_from).architecture]
        return config.projection if self.pooled_projected and config.projection else config.width


@dataclass(frozen=True)
class ModelFamily:
    """One model family: its U-Net preset (None for a custom network), how it was trained, its text conditioning
    (None when unknown), its latents, and the recipe of its U-Net's vector condition y (None when it reads none)."""

    name: str
    display_name: str
    unet: UNetConfig | None
    training: TrainingSpec
    text: TextConditioning | None
    latent: LatentFormat
    vector: object = None  # sdxl_conditioning.VectorRecipe (or UnknownVector for a custom width), or None

    @property
    def pooled_width(self):
        """The width of the pooled text the vector condition reads (0 without one)."""
        return self.vector.pooled_width if self.vector is not None else 0

    def vector_condition(self, pooled, *, width, height, crop_w=0, crop_h=0, target_width=None, target_height=None,
                         aesthetic_score=None, negative=False):
        """The U-Net's vector condition y for pooled text (B, P) and the image's numbers, None without one.

        SDXL: pooled + Fourier features of (h, w, crop_h, crop_w, target_h, target_w) (Podell et al. 2023,
        sec. 2.2); the refiner: (h, w, crop_h, crop_w, aesthetic score), the score 6.0 for prompts and 2.5 for
        negatives unless given. Numbers a recipe does not read are ignored.
        """
        if self.vector is None:
            return None
        if pooled is None:
            raise ValueError(f"conditioning: the {self.display_name} U-Net's vector condition needs the pooled text")
        if self.vector.pooled_width and pooled.shape[-1] != self.vector.pooled_width:
            raise ValueError(f"conditioning: pooled text {pooled.shape[-1]} wide; the {self.display_name} U-Net's "
                             f"vector condition needs {self.vector.pooled_width}")
        return self.vector(pooled, width=width, height=height, crop_w=crop_w, crop_h=crop_h, target_width=target_width,
                           target_height=target_height, aesthetic_score=aesthetic_score, negative=negative)


# As each model was trained: SD1 reads CLIP-L's last layer (normed); SD2 OpenCLIP-H's penultimate layer,
# normed; SDXL the penultimate layers of CLIP-L and bigG, not normed, side by side (768 + 1280 = 2048).
SD1_TEXT = TextConditioning("sd1", "Stable Diffusion 1.x: CLIP ViT-L/14, last layer",
                            (TowerUse("l", "clip_l", -1, True, END_TOKEN),), "l", False)
SD2_TEXT = TextConditioning("sd2", "Stable Diffusion 2.x: OpenCLIP ViT-H/14, penultimate layer",
                            (TowerUse("h", "clip_h", -2, True, 0),), "h", True)
SDXL_TEXT = TextConditioning("sdxl", "SDXL: CLIP ViT-L/14 and OpenCLIP ViT-bigG/14, penultimate layers; pooled bigG",
                             (TowerUse("l", "clip_l", -2, False, END_TOKEN), TowerUse("g", "clip_g", -2, False, 0)),
                             "g", True, True)
REFINER_TEXT = TextConditioning("sdxl_refiner", "SDXL refiner: OpenCLIP ViT-bigG/14, penultimate layer",
                                (TowerUse("g", "clip_g", -2, False, 0),), "g", True, True)
SMALL_TEXT = TextConditioning("small", "Diffusion Blocks small: a 64-wide CLIP text tower, last layer",
                              (TowerUse("s", "clip_small", -1, True, END_TOKEN),), "s", False)

# The VAEs' latent scales (Rombach et al. 2022; Podell et al. 2023); the small model works on RGB pixels.
SD_LATENTS = LatentFormat(4, 0.18215, comfy_name="SD15")
SDXL_LATENTS = LatentFormat(4, 0.13025, comfy_name="SDXL")
PIXELS = LatentFormat(3, 1.0, pixels_per_latent=1)
SDXL_TRAINING = TrainingSpec(latent_scale=0.13025)

FAMILIES = {family.name: family for family in (
    # Rombach et al. 2022, v1-inference.yaml: 860 M parameters, 8 heads, CLIP ViT-L/14 text (768).
    ModelFamily("sd1", "SD1.x",
                _preset((1, 1, 1, 0), model_channels=320, channel_mult=(1, 2, 4, 4), transformer_depth_middle=1,
                        context_dim=768, num_heads=8, head_channels=-1),
                TrainingSpec(), SD1_TEXT, SD_LATENTS),
    # Stable Diffusion 2.x (v2-inference.yaml): 64-wide heads, linear projections, OpenCLIP ViT-H text (1024).
    # The 768-v models share every shape and are told apart when loading (unet_loading.SD2_V_PROBE).
    ModelFamily("sd2", "SD2.x",
                _preset((1, 1, 1, 0), model_channels=320, channel_mult=(1, 2, 4, 4), transformer_depth_middle=1,
                        context_dim=1024, num_heads=-1, head_channels=64, linear_projection=True),
                TrainingSpec(), SD2_TEXT, SD_LATENTS),
    # Podell et al. 2023, tab. 1: three levels, transformer depths 0/2/10, CLIP-L + bigG text (2048),
    # pooled text + six size/crop embeddings as the vector condition (1280 + 6 * 256).
    ModelFamily("sdxl", "SDXL base",
                _preset((0, 2, 10), model_channels=320, channel_mult=(1, 2, 4), transformer_depth_middle=10,
                        context_dim=2048, num_heads=-1, head_channels=64, linear_projection=True, adm_in_channels=2816),
                SDXL_TRAINING, SDXL_TEXT, SDXL_LATENTS, SDXL_VECTOR),
    # The SDXL refiner: 384 channels, depth 4 at the two middle levels, bigG text only (1280),
    # pooled text + size, crop and aesthetic-score embeddings (1280 + 5 * 256).
    ModelFamily("sdxl_refiner", "SDXL refiner",
                _preset((0, 4, 4, 0), model_channels=384, channel_mult=(1, 2, 4, 4), transformer_depth_middle=4,
                        context_dim=1280, num_heads=-1, head_channels=64, linear_projection=True, adm_in_channels=2560),
                SDXL_TRAINING, REFINER_TEXT, SDXL_LATENTS, REFINER_VECTOR),
    # Segmind's SSD-1B (Gupta et al. 2024), SDXL distilled: SDXL's text, vector and latents; fewer transformer
    # blocks (encoder 2/4, decoder 4, 4, 10 | 2, 1, 1 per block) and a middle block of one residual block.
    ModelFamily("ssd1b", "SSD-1B",
                UNetConfig(model_channels=320, channel_mult=(1, 2, 4), num_res_blocks=(2, 2, 2),
                           transformer_depth=(0, 0, 2, 2, 4, 4), transformer_depth_output=(4, 4, 10, 2, 1, 1, 0, 0, 0),
                           transformer_depth_middle=-1, context_dim=2048, num_heads=-1, head_channels=64,
                           linear_projection=True, adm_in_channels=2816),
                SDXL_TRAINING, SDXL_TEXT, SDXL_LATENTS, SDXL_VECTOR),
    # The pack's own text-to-image model: 64x64 RGB pixels, attention at 32x32 and 16x16, a 64-wide text
    # encoder; 4.1 M parameters (8 MB in fp16), 20 CFG steps in under 2 s on two CPU cores. Trained (training/)
    # for v prediction on DDPM's linear betas (Ho et al. 2020).
    ModelFamily("small", "Diffusion Blocks small",
                _preset((0, 1, 1), num_res_blocks=1, in_channels=3, out_channels=3, model_channels=32,
                        channel_mult=(1, 2, 4), transformer_depth_middle=1, context_dim=64, num_heads=-1,
                        head_channels=32, linear_projection=True),
                TrainingSpec(prediction="v", beta_schedule="linear", beta_start=1e-4, beta_end=0.02, latent_scale=1.0),
                SMALL_TEXT, PIXELS),
)}
# The distinct text conditionings, by name (families may share one: SSD-1B reads SDXL's).
TEXT_CONDITIONINGS = {family.text.name: family.text for family in FAMILIES.values() if family.text is not None}


def published_family(structure):
    """The published family whose U-Net has this structure (a UNetConfig, or detection's dict of its fields),
    in/out channels and heads aside (so an inpainting U-Net is its family's), else None."""
    fields = structure if isinstance(structure, dict) else dataclasses.asdict(structure)
    for family in FAMILIES.values():
        if family.unet is not None and all(fields[f] == getattr(family.unet, f) for f in STRUCTURE_FIELDS):
            return family
    return None


def latent_format(channels, scale):
    """The LatentFormat of `channels`-channel latents at this scale: a published family's when one has these numbers,
    else pixel space (3 channels, scale 1) or an SD-autoencoder-sized latent."""
    known = next((family.latent for family in FAMILIES.values()
                  if (family.latent.channels, family.latent.scale, family.latent.shift) == (channels, scale, 0.0)), None)
    if known is not None:
        return known
    return LatentFormat(channels, scale, pixels_per_latent=1 if channels == 3 and scale == 1 else LATENT_TO_PIXELS)


def family_for(config, spec=None):
    """The family of a U-Net of this config trained as `spec` (None: as its family was).

    A published family's structure gives its record (itself when spec and channels agree with it; else the record
    with this spec as its training and the latents of this network's channels and spec's scale). Any other
    config gives a "custom" family: latents of its latent_channels at spec.latent_scale, no text record, and
    the vector recipe of its adm_in_channels width if one makes it (else one that raises naming the width).
    """
    family = published_family(config)
    if family is None:
        spec = spec or TrainingSpec()
        return ModelFamily("custom", "custom", None, spec, None,
                           latent_format(config.latent_channels, spec.latent_scale),
                           recipe_for_width(config.adm_in_channels))
    spec = spec or family.training
    own = (config.latent_channels, spec.latent_scale) == (family.latent.channels, family.latent.scale)
    latent = family.latent if own else latent_format(config.latent_channels, spec.latent_scale)
    if spec == family.training and latent == family.latent:
        return family
    return dataclasses.replace(family, training=spec, latent=latent)
