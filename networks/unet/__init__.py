"""The latent-diffusion U-Net: its configuration, layers and the network (the published presets: networks.families)."""
from .config import UNetConfig, uniform_depths
from .model import UNet

__all__ = ["UNet", "UNetConfig", "uniform_depths"]
