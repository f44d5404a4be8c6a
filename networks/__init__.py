"""Noise predictors and text encoders (U-Net, CLIP), weight loading and prediction wrappers."""

# What a model family is: U-Net preset, training, text conditioning, latents, vector condition.
from .families import FAMILIES, LatentFormat, ModelFamily, TextConditioning, family_for
from .training_spec import TrainingSpec

# Text encoders (CLIP tokenizer, prompt syntax, CLIP text towers, loading).
from .clip_tokenizer import ClipTokenizer
from .prompt_syntax import EmbeddingLibrary, EmbeddingNotFound, parse_weights, tokenize_prompt
from .text_encoder import TextEncoder
from .text_encoder_loading import load_text_encoder

# The U-Net noise predictor (network, loading, prediction wrappers).
from .prediction import Cond, Denoiser
from .unet import UNet, UNetConfig
from .unet.fast import fast_unet
from .unet_loading import UNetLoadError, load_unet, save_unet
