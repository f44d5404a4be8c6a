"""Samplers in the k-diffusion calling convention: fn(model, x, sigmas, extra_args, callback, disable, **options)."""
from .common import SamplerSpec
from .noise_model import NoiseModel
from .registry import SAMPLER_SPECS, SAMPLERS, sampler_options

__all__ = ["SAMPLERS", "SAMPLER_SPECS", "SamplerSpec", "NoiseModel", "sampler_options"]
