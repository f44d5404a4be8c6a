"""The discrete-time samplers of DDPM, DDIM and LCM, written in the sigma variables of an EDM denoiser.

A variance-preserving sample z_t with alpha_bar_t = 1 / (1 + sigma^2) is x / sqrt(1 + sigma^2) in the
sigma (variance exploding) variables used here, and eps = (x - D(x, sigma)) / sigma. Dividing each paper's
update for z_{t-1} by sqrt(alpha_bar_{t-1}) gives the updates below, with sigma = sigma_t and
sigma_next = sigma_{t-1}; no beta table is needed: only the ratio of the two noise levels enters.

For a rectified-flow model (noise_model="flow", x = alpha x0 + sigma eps, alpha = 1 - sigma) the same maths holds in
the noise-to-signal variables x / alpha, sigma / alpha; multiplied back by alpha_next it gives the updates below with
alpha's in place (alpha = 1 for VE), eps = (x - alpha D) / sigma.
"""
from functools import partial

import torch

from .common import SamplerSpec, prepare, report
from .noise_model import noise_model_of


def _one_call_loop(step, model, x, sigmas, extra_args, callback, noise_sampler, noise_model):
    """The discrete samplers' loop: one model call, then x = step(x, denoised, sigma, sigma_next, alpha, alpha_next,
    noise_sampler)."""
    extra_args, noise_sampler, s_in = prepare(x, extra_args, noise_sampler)
    noise_model = noise_model_of(noise_model)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        alpha, alpha_next = noise_model.alpha(sigma), noise_model.alpha(sigma_next)
        denoised = model(x, sigma * s_in, **extra_args)
        report(callback, i, x, sigma, sigma, denoised)
        x = step(x, denoised, sigma, sigma_next, alpha, alpha_next, noise_sampler)
    return x


def _ddpm_step(x, denoised, sigma, sigma_next, alpha, alpha_next, noise_sampler):
    """x_next ~ q(x_next | x, x0 = D): the posterior mean and sqrt(beta_tilde) noise."""
    # VE: (sigma_next / sigma)^2 = (1 - alpha_bar_prev) alpha_bar / ((1 - alpha_bar) alpha_bar_prev)
    ratio = (sigma_next / sigma) ** 2 * (alpha / alpha_next)
    x = alpha_next * denoised + ratio * (x - alpha * denoised)  # posterior mean (Ho et al. eq. 7)
    if sigma_next > 0:  # sqrt(beta_tilde), scaled
        x = x + noise_sampler(sigma, sigma_next) * sigma_next * (1 - ratio * alpha / alpha_next) ** 0.5
    return x


@torch.no_grad()
def ddpm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, noise_model="ve"):
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2, posterior variance beta_tilde): draw x_next ~ q(x_next | x, x0 = D)."""
    return _one_call_loop(_ddpm_step, model, x, sigmas, extra_args, callback, noise_sampler, noise_model)


def _ddim_step(x, denoised, sigma, sigma_next, alpha, alpha_next, noise_sampler, eta, s_noise):
    """Predicted x0, the direction pointing to x_t, and noise sigma_t(eta)."""
    eps = (x - alpha * denoised) / sigma
    # sigma_t of eq. 16, divided by sqrt(alpha_bar_prev); at most sigma_next
    # (eta > 1 would need more noise than there is)
    ratio = (sigma_next / sigma) * (alpha / alpha_next)  # of the noise-to-signal ratios
    sigma_t = min(sigma_next, eta * sigma_next * (1 - ratio**2) ** 0.5)
    x = alpha_next * denoised + (sigma_next**2 - sigma_t**2) ** 0.5 * eps
    if sigma_t > 0:
        x = x + noise_sampler(sigma, sigma_next) * s_noise * sigma_t
    return x


@torch.no_grad()
def ddim(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=0.0, s_noise=1.0, noise_sampler=None,
         noise_model="ve"):
    """DDIM (Song et al. 2021, eq. 12): predicted x0, the direction pointing to x_t, and noise sigma_t(eta); eta = 0 is deterministic."""
    step = partial(_ddim_step, eta=eta, s_noise=s_noise)
    return _one_call_loop(step, model, x, sigmas, extra_args, callback, noise_sampler, noise_model)


def _lcm_step(x, denoised, sigma, sigma_next, alpha, alpha_next, noise_sampler):
    """Jump to D, then re-noise to sigma_next."""
    x = alpha_next * denoised
    if sigma_next > 0:
        x = x + noise_sampler(sigma, sigma_next) * sigma_next
    return x


@torch.no_grad()
def lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, noise_model="ve"):
    """Latent consistency model multistep sampling (Luo et al. 2023, Algorithm 1): jump to D, then re-noise to sigma_next."""
    return _one_call_loop(_lcm_step, model, x, sigmas, extra_args, callback, noise_sampler, noise_model)


SPECS = {
    "ddpm": SamplerSpec(
        fn=ddpm, calls_per_step=1, order=1, stochastic=True,
        summary="DDPM: sample the next, less noisy step from the posterior given the "
                "predicted clean image (Ho et al. 2020)."),
    "ddim": SamplerSpec(
        fn=ddim, calls_per_step=1, order=1, stochastic=False,
        summary="DDIM (Song et al. 2021): deterministic at eta = 0 (the same as Euler); "
                "eta = 1 gives DDPM's noise."),
    "lcm": SamplerSpec(
        fn=lcm, calls_per_step=1, order=0, stochastic=True,
        summary="Latent consistency sampling: jump to the predicted clean image, then add "
                "noise for the next level; for consistency-distilled models."),
}
