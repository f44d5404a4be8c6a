"""Noise predictors and text encoders (U-Net, CLIP), weight loading and prediction wrappers."""

# Text encoders (CLIP tokenizer, prompt syntax, CLIP text towers, loading).
from .clip_tokenizer import ClipTokenizer
from .prompt_syntax import EmbeddingLibrary, EmbeddingNotFound, parse_weights, tokenize_prompt
from .sdxl_conditioning import sdxl_vector
from .text_encoder import FAMILIES as TEXT_ENCODER_FAMILIES, TextEncoder
from .text_encoder_loading import load_text_encoder

# The U-Net noise predictor (network, presets, loading, prediction wrappers).
from .prediction import Cond, Denoiser, TrainingSpec
from .unet import PRESETS as UNET_PRESETS, UNet, UNetConfig
from .unet.fast import fast_unet
from .unet_loading import UNetLoadError, load_unet, save_unet
