"""The latent-diffusion U-Net: its configuration, presets, layers and the network."""
from .config import PRESETS, UNetConfig, uniform_depths
from .model import UNet

__all__ = ["UNet", "UNetConfig", "PRESETS", "uniform_depths"]
