"""A denoiser as ComfyUI's k-diffusion samplers see their model: callable, plus the model sampling they look up."""
from types import SimpleNamespace


class KDiffusionModel:
    """`denoise(x, sigma, **extra_args)` carrying what ComfyUI's samplers read besides calling it:
    model.inner_model.inner_model.model_sampling and model.inner_model.model_patcher.get_model_object("model_sampling")."""

    def __init__(self, denoise, model_sampling):
        self.denoise = denoise
        patcher = SimpleNamespace(get_model_object={"model_sampling": model_sampling}.__getitem__)
        self.inner_model = SimpleNamespace(inner_model=SimpleNamespace(model_sampling=model_sampling),
                                           model_patcher=patcher)

    def __call__(self, x, sigma, model_options=None, **extra_args):
        if (model_options or {}).get("sampler_post_cfg_function"):
            raise ValueError("sampler: ComfyUI's CFG++ samplers need ComfyUI's own guidance; connect Noise Predictor "
                             "as MODEL to SamplerCustom instead")
        return self.denoise(x, sigma, **extra_args)
