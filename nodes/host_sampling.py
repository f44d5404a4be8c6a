"""The pack's sampling run inside ComfyUI's own guider (comfy.samplers.CFGGuider), for what only the host can honour:
conditioning as KSampler reads it (Combine, areas, masks, timestep ranges, a ControlNet's control, per-entry pooled
text and sizes), a LATENT's inpainting mask, a native MODEL with its patches and wrappers.

The guider prepares the run as it does for SamplerCustom (models and ControlNets loaded, conds converted and batched,
the model's concat inputs made) and then calls its sampler; that sampler is the pack's pipeline (PipelineSampler), so
its promises hold on any model: item k of a batch is the image of seed + k, a run split over two nodes equals one run,
the trajectory is recorded.
"""
import functools

import comfy.sample
import comfy.samplers
import torch

from ..pipeline.finite import explain_non_finite, is_finite
from ..pipeline.noise import start_noise
from ..pipeline.part_way import PartWay
from ..pipeline.predict import NoisePrediction
from ..pipeline.run import Sampled, check_finite_end, sample, watched
from .k_model import KDiffusionModel
from .wires import native_conditioning, pack_denoiser


def inpainting_model(model_wrap, sigmas, latent_image, noise):
    """The guided model dressed as KSAMPLER dresses it: KSamplerX0Inpaint, which keeps the unmasked part of an
    inpainting latent (its start noise re-added at each level)."""
    model = comfy.samplers.KSamplerX0Inpaint(model_wrap, sigmas)
    model.latent_image, model.noise = latent_image, noise
    return model


class PipelineSampler(comfy.samplers.Sampler):
    """The sampler ComfyUI's guider calls once the run is prepared: the pack's pipeline.sample on the guided model
    (inpainting_model), its forward process the model's own (noise_scaling: x = latent + sigma * noise, or a flow
    model's mix)."""

    def __init__(self, fn, options: dict, seeds, *, callback=None, record=False, resume: PartWay | None = None):
        self.fn, self.options, self.seeds = fn, options, seeds
        self.callback, self.record, self.resume = callback, record, resume
        self.sampled: Sampled | None = None

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        model = inpainting_model(model_wrap, sigmas, latent_image, noise)
        sampling = model_wrap.inner_model.model_sampling
        own_post_cfg = len(extra_args["model_options"].get("sampler_post_cfg_function", []))
        self.sampled = sample(self.fn, model, latent_image, sigmas, self.seeds, callback=self.callback,
                              options=self.options, record=self.record, resume=self.resume,
                              wrap=lambda logged: KDiffusionModel(logged, sampling, own_post_cfg),
                              extra_args={**extra_args, "denoise_mask": denoise_mask},
                              scaling=lambda latent, start, sigma: sampling.noise_scaling(sigma, start, latent))
        return sampling.inverse_noise_scaling(sigmas[-1], self.sampled.samples)


def sample_on_host(model, fn, options: dict, sigmas: torch.Tensor, latent: dict, seed: int, cfg: float, positive=None,
                   negative=None, *, callback=None, record=False, resume: PartWay | None = None) -> Sampled:
    """Sampled (samples and denoised in the LATENT's units, trajectory in the model's) of the pack's pipeline run
    through ComfyUI's guider on a MODEL wire (a ModelPatcher), as SamplerCustom runs it (unconnected conditioning: see
    wires.native_conditioning); a denoised estimate that is not finite at the first step or at the end is an error
    naming its likeliest cause."""
    explain = functools.partial(explain_non_finite, pack_denoiser(model), sigmas=sigmas, latent=latent["samples"],
                                cfg=cfg)
    positive = native_conditioning(positive, model, "positive")
    negative = native_conditioning(negative, model, "negative")
    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    seeds = list(resume.seeds) if resume is not None else seed
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    run = PipelineSampler(fn, options, seeds, callback=watched(callback, explain), record=record, resume=resume)
    first_seed = resume.seeds[0] if resume is not None else seed  # what ComfyUI's model conditions may read
    out = guider.sample(start_noise(samples.shape, seeds), samples, run, torch.as_tensor(sigmas, dtype=torch.float32),
                        denoise_mask=latent.get("noise_mask"), disable_pbar=True, seed=first_seed)
    latent_format = model.get_model_object("latent_format")
    check_finite_end(run.sampled, explain)
    return run.sampled._replace(samples=out, denoised=latent_format.process_out(run.sampled.denoised.float()))


class OneLook(comfy.samplers.Sampler):
    """The 'sampler' of one look at the noise predictor: the guided model asked once at sigmas[0], its input the
    model's forward process of the start noise; keeps the noisy input and the denoised answer."""

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        model = inpainting_model(model_wrap, sigmas, latent_image, noise)
        self.sampling = model_wrap.inner_model.model_sampling
        self.noisy = self.sampling.noise_scaling(sigmas[0], noise, latent_image)
        with torch.no_grad():
            self.denoised = model(self.noisy, sigmas[:1].expand(noise.shape[0]),
                                  **{**extra_args, "denoise_mask": denoise_mask})
        return self.denoised


def predict_on_host(model, latent: dict, sigma: float, seed: int, positive=None) -> NoisePrediction:
    """The noise predictor's look at a clean latent noised to `sigma` with the seed's noise (pipeline.predict_noise)
    through ComfyUI's guider, unguided (cfg 1) on `positive`; in the model's units. The predicted noise is the one the
    model's forward process turns the predicted clean latent into the noisy input with."""
    positive = native_conditioning(positive, model, "positive")
    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, positive)
    look = OneLook()
    guider.sample(start_noise(samples.shape, seed), samples, look, torch.tensor([sigma, 0.0]),
                  denoise_mask=latent.get("noise_mask"), disable_pbar=True, seed=seed)
    noisy, denoised = look.noisy.float().cpu(), look.denoised.float().cpu()
    if not is_finite(denoised):
        raise ValueError(explain_non_finite(pack_denoiser(model), f"at sigma {sigma:g}", latent=latent["samples"]))
    clean = model.get_model_object("latent_format").process_in(samples.float())
    without_noise = look.sampling.noise_scaling(torch.tensor(sigma), torch.zeros_like(denoised), denoised)
    noise = (noisy - without_noise) / sigma if sigma > 0 else torch.zeros_like(noisy)
    return NoisePrediction(clean, noisy, denoised, noise)
