"""A denoiser as ComfyUI's k-diffusion samplers see their model: callable, plus the model sampling they look up."""
from types import SimpleNamespace


class KDiffusionModel:
    """`denoise(x, sigma, **extra_args)` carrying what ComfyUI's samplers read besides calling it:
    model.inner_model.inner_model.model_sampling and model.inner_model.model_patcher.get_model_object("model_sampling").
    The host's model_options go through (ComfyUI's guider needs them); a post-CFG function a sampler adds to them
    beyond the model's own `own_post_cfg` (CFG++) is refused: the pack's runs replay model calls, which skips it."""

    def __init__(self, denoise, model_sampling, own_post_cfg: int = 0):
        self.denoise, self.own_post_cfg = denoise, own_post_cfg
        patcher = SimpleNamespace(get_model_object={"model_sampling": model_sampling}.__getitem__)
        self.inner_model = SimpleNamespace(inner_model=SimpleNamespace(model_sampling=model_sampling),
                                           model_patcher=patcher)

    def __call__(self, x, sigma, model_options=None, **extra_args):
        if model_options is None:
            return self.denoise(x, sigma, **extra_args)
        if len(model_options.get("sampler_post_cfg_function", [])) > self.own_post_cfg:
            raise ValueError("sampler: ComfyUI's CFG++ samplers need ComfyUI's own sampling; connect the MODEL (Noise "
                             "Predictor as MODEL for the pack's U-Net) to SamplerCustom instead")
        return self.denoise(x, sigma, model_options=model_options, **extra_args)
