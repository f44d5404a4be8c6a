"""What ComfyUI's k-diffusion samplers read from their model besides calling it, for reference runs."""
from types import SimpleNamespace


def sd1_model_sampling():
    """ComfyUI's own SD1.x model sampling (discrete, eps prediction): sigma is the EDM sigma."""
    import comfy.model_sampling as ms

    class SD1Sampling(ms.ModelSamplingDiscrete, ms.EPS):
        pass

    return SD1Sampling()


class ComfyModelStandIn:
    """A denoiser with the attributes ComfyUI's samplers look up: model.inner_model.inner_model.model_sampling
    and model.inner_model.model_patcher.get_model_object("model_sampling")."""

    def __init__(self, denoiser, model_sampling=None):
        self.denoiser = denoiser
        sampling = model_sampling or sd1_model_sampling()
        patcher = SimpleNamespace(get_model_object={"model_sampling": sampling}.__getitem__)
        self.inner_model = SimpleNamespace(inner_model=SimpleNamespace(model_sampling=sampling), model_patcher=patcher)

    def __call__(self, x, sigma, **extra_args):
        return self.denoiser(x, sigma, **extra_args)


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
