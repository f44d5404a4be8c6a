"""The one inference pipeline every route calls: seeded start noise, the noisy start, guidance, the sampler, the trajectory.

Pure torch (no ComfyUI): the Sample, Denoising Trajectory, Predict Noise and Add Noise nodes, the bundled model's
text-to-image function, the scripts and the benchmarks all go through it, so they agree picture for picture.
Seeds are per item: item k of a batch drawn with seed s is the single image of seed s + k (or give one seed per item).
"""
from .conditioning import condition, empty_condition
from .guidance import Guided
from .noise import noisy_start, start_noise
from .predict import NoisePrediction, predict_noise
from .run import Sampled, Trajectory, evenly_spaced, generate, sample
from .text_to_image import text_to_image

__all__ = ["condition", "empty_condition", "Guided", "noisy_start", "start_noise", "NoisePrediction",
           "predict_noise", "Sampled", "Trajectory", "evenly_spaced", "generate", "sample", "text_to_image"]
