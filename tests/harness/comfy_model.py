"""Reference runs of ComfyUI's k-diffusion samplers: a denoiser as their model, and noise keyed by the step."""
from diffusion_blocks.devtools.comfy_host import sd1_model_sampling


def sd1_k_model(denoiser, model_sampling=None):
    """`denoiser` as ComfyUI's samplers see a model: the pack's KDiffusionModel with SD1.x's model sampling."""
    from diffusion_blocks.nodes.k_model import KDiffusionModel  # nodes/ imports comfy: only once it is set up

    return KDiffusionModel(denoiser, model_sampling or sd1_model_sampling())


def keyed_noise_for(shape):
    """A noise sampler whose draw is fixed by the (rounded) pair of noise levels, so two samplers that
    step through the same levels draw the same noise whatever their call order."""
    import math

    import torch

    def keyed_noise(sigma, sigma_next):
        key = round(1000 * math.log(float(sigma))) * 100003 + round(1000 * math.log(max(float(sigma_next), 1e-30)))
        generator = torch.Generator().manual_seed(key % (2**62))
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    return keyed_noise
