"""Karras et al. (2022, "Elucidating the Design Space of Diffusion-Based Generative Models") ODE samplers:
Euler, Heun and a DPM-Solver-2-style midpoint step, each with the optional "churn" of Algorithm 2, their
ancestral variants (Song et al. 2021), and Heun++ (heunpp2).

All of them integrate the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma of an EDM / variance
exploding denoiser D. Churn (Algorithm 2, lines 4-6) first raises the noise level from sigma to
sigma_hat = sigma (1 + gamma) by adding fresh noise, gamma = min(s_churn / N, sqrt(2) - 1) inside
[s_tmin, s_tmax], then takes the ODE step from sigma_hat.

The ODE and its steps are the same for a rectified-flow model (noise_model="flow"; see noise_model.py). Fresh noise
is not: churn raises the noise-to-signal ratio sigma / alpha by 1 + gamma (the VE sigma of Algorithm 2), and the
ancestral split keeps the sample on the flow's path, both through the NoiseModel.
"""
import torch

from .common import SamplerSpec, prepare, report, to_d
from .noise_model import VE, noise_model_of


def churn(x, sigma, steps, s_churn, s_tmin, s_tmax, s_noise, noise_sampler, noise_model=VE):
    """Algorithm 2, lines 4-6: return x at sigma_hat and sigma_hat (x unchanged when gamma = 0), where sigma_hat / alpha
    = (1 + gamma) sigma / alpha: sigma (1 + gamma) for VE. Pure noise (a flow model's sigma = 1) is not churned.

    The noise comes from noise_sampler(sigma_hat, sigma), the interval it bridges."""
    gamma = min(s_churn / steps, 2**0.5 - 1) if s_churn > 0 and s_tmin <= sigma <= s_tmax else 0.0
    if noise_model.flow and sigma >= 1:
        gamma = 0.0
    sigma_hat = noise_model.from_ratio(noise_model.ratio(sigma) * (gamma + 1)) if gamma > 0 else sigma
    if gamma > 0:
        x = noise_model.raise_noise(x, sigma, sigma_hat, noise_sampler(sigma_hat, sigma) * s_noise)
    return x, sigma_hat


def heun_step(model, x, sigma, sigma_next, d_cur, s_in, extra_args):
    """Algorithm 1, lines 5-8: Heun's trapezoidal step from sigma to sigma_next given d_cur = dx/dsigma at (x, sigma)."""
    h = sigma_next - sigma
    x_next = x + h * d_cur
    if sigma_next == 0:
        return x_next  # Euler to sigma = 0: the correction would divide by zero
    d_prime = to_d(x_next, sigma_next, model(x_next, sigma_next * s_in, **extra_args))
    return x + h * (d_cur + d_prime) / 2


def euler_step(model, x, sigma, sigma_next, d_cur, s_in, extra_args):
    """Algorithm 1, line 5: Euler's step from sigma to sigma_next given d_cur = dx/dsigma at (x, sigma)."""
    return x + (sigma_next - sigma) * d_cur


def _midpoint_step(model, x, sigma, sigma_next, d_cur, s_in, extra_args):
    """x + (sigma_next - sigma) d(x_mid, sigma_mid), sigma_mid = sqrt(sigma sigma_next) (Euler when sigma_next = 0)."""
    if sigma_next == 0:
        return x + (sigma_next - sigma) * d_cur
    sigma_mid = (sigma * sigma_next) ** 0.5
    x_mid = x + (sigma_mid - sigma) * d_cur
    d_mid = to_d(x_mid, sigma_mid, model(x_mid, sigma_mid * s_in, **extra_args))
    return x + (sigma_next - sigma) * d_mid


def _churned_loop(step, model, x, sigmas, extra_args, callback, s_churn, s_tmin, s_tmax, s_noise, noise_sampler,
                  noise_model):
    """Karras et al. 2022, Algorithm 2: churn, one model call, then step(model, x, sigma_hat, sigma_next, d_cur, s_in,
    extra_args) on to sigma_next."""
    extra_args, noise_sampler, s_in = prepare(x, extra_args, noise_sampler)
    noise_model = noise_model_of(noise_model)
    steps = len(sigmas) - 1
    for i in range(steps):
        x, sigma_hat = churn(x, sigmas[i], steps, s_churn, s_tmin, s_tmax, s_noise, noise_sampler, noise_model)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d_cur = to_d(x, sigma_hat, denoised)
        report(callback, i, x, sigmas[i], sigma_hat, denoised)
        x = step(model, x, sigma_hat, sigmas[i + 1], d_cur, s_in, extra_args)
    return x


@torch.no_grad()
def euler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0,
          s_tmax=float("inf"), s_noise=1.0, noise_sampler=None, noise_model="ve"):
    """Karras et al. 2022, Algorithm 2 with first-order (Euler) steps."""
    return _churned_loop(euler_step, model, x, sigmas, extra_args, callback, s_churn, s_tmin, s_tmax, s_noise,
                         noise_sampler, noise_model)


@torch.no_grad()
def heun(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0,
         s_tmax=float("inf"), s_noise=1.0, noise_sampler=None, noise_model="ve"):
    """Karras et al. 2022, Algorithm 2 (Heun's second-order steps; Euler for the last step to sigma = 0)."""
    return _churned_loop(heun_step, model, x, sigmas, extra_args, callback, s_churn, s_tmin, s_tmax, s_noise,
                         noise_sampler, noise_model)


@torch.no_grad()
def dpm_2(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0,
          s_tmax=float("inf"), s_noise=1.0, noise_sampler=None, noise_model="ve"):
    """Karras et al. 2022, Algorithm 2 with a DPM-Solver-2 step: the slope at the log-sigma midpoint drives the whole step."""
    return _churned_loop(_midpoint_step, model, x, sigmas, extra_args, callback, s_churn, s_tmin, s_tmax, s_noise,
                         noise_sampler, noise_model)


def ancestral_loop(step, model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, noise_model,
                   renoise_whenever_noisy=False):
    """Ancestral sampling (Song et al. 2021): one model call, step(model, x, sigma, sigma_down, denoised, s_in,
    extra_args) down to sigma_down, then fresh noise sigma_up (drawn while sigma_up > 0; with renoise_whenever_noisy,
    while sigma_next > 0, as ComfyUI's dpmpp_2s_ancestral draws)."""
    extra_args, noise_sampler, s_in = prepare(x, extra_args, noise_sampler)
    noise_model = noise_model_of(noise_model)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        sigma_down, sigma_up, scale = noise_model.ancestral_step(sigma, sigma_next, eta)
        report(callback, i, x, sigma, sigma, denoised)
        x = step(model, x, sigma, sigma_down, denoised, s_in, extra_args)
        if sigma_up > 0 or (renoise_whenever_noisy and sigma_next > 0):
            x = scale * x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x


def _euler_down(model, x, sigma, sigma_down, denoised, s_in, extra_args):
    """An Euler step to sigma_down; to sigma = 0 it lands on the denoised estimate."""
    return denoised if sigma_down == 0 else x + (sigma_down - sigma) * to_d(x, sigma, denoised)


def _midpoint_down(model, x, sigma, sigma_down, denoised, s_in, extra_args):
    """A DPM-Solver-2 midpoint step to sigma_down."""
    return _midpoint_step(model, x, sigma, sigma_down, to_d(x, sigma, denoised), s_in, extra_args)


@torch.no_grad()
def euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                    noise_sampler=None, noise_model="ve"):
    """Ancestral sampling (Song et al. 2021) with Euler steps down to sigma_down, then fresh noise sigma_up."""
    return ancestral_loop(_euler_down, model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler,
                          noise_model)


@torch.no_grad()
def dpm_2_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                    noise_sampler=None, noise_model="ve"):
    """Ancestral sampling (Song et al. 2021) with DPM-Solver-2 midpoint steps down to sigma_down, then noise sigma_up."""
    return ancestral_loop(_midpoint_down, model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler,
                          noise_model)


@torch.no_grad()
def heunpp2(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0,
            s_tmax=float("inf"), s_noise=1.0, noise_sampler=None, noise_model="ve"):
    """Heun++ (Carzit, sd-webui-samplers-scheduler): slopes at sigma_i, sigma_i+1, sigma_i+2 averaged with weights sigma / (3 sigma_0)."""
    extra_args, noise_sampler, s_in = prepare(x, extra_args, noise_sampler)
    noise_model = noise_model_of(noise_model)
    steps = len(sigmas) - 1
    sigma_end, sigma_start = sigmas[-1], sigmas[0]
    for i in range(steps):
        x, sigma_hat = churn(x, sigmas[i], steps, s_churn, s_tmin, s_tmax, s_noise, noise_sampler, noise_model)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d_cur = to_d(x, sigma_hat, denoised)
        report(callback, i, x, sigmas[i], sigma_hat, denoised)
        h = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == sigma_end:  # last step: Euler
            x = x + h * d_cur
            continue
        x_2 = x + h * d_cur  # Euler predictor to sigma_i+1
        d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1] * s_in, **extra_args))
        if sigmas[i + 2] == sigma_end:  # second to last step: two slopes
            w_2 = sigmas[i + 1] / (2 * sigma_start)
            x = x + h * ((1 - w_2) * d_cur + w_2 * d_2)
            continue
        x_3 = x_2 + (sigmas[i + 2] - sigmas[i + 1]) * d_2  # a second Euler predictor, on to sigma_i+2
        d_3 = to_d(x_3, sigmas[i + 2], model(x_3, sigmas[i + 2] * s_in, **extra_args))
        w_2, w_3 = sigmas[i + 1] / (3 * sigma_start), sigmas[i + 2] / (3 * sigma_start)
        x = x + h * ((1 - w_2 - w_3) * d_cur + w_2 * d_2 + w_3 * d_3)
    return x


SPECS = {
    "euler": SamplerSpec(
        fn=euler, calls_per_step=1, order=1, stochastic=False,
        summary="Euler steps on the probability-flow ODE (Karras et al. 2022, Alg. 2); "
                "s_churn adds fresh noise before each step."),
    "euler_ancestral": SamplerSpec(
        fn=euler_ancestral, calls_per_step=1, order=1, stochastic=True,
        summary="Euler step to a lower noise level, then fresh noise "
                "back up to the next one (ancestral sampling)."),
    "heun": SamplerSpec(
        fn=heun, calls_per_step=2, order=2, stochastic=False,
        summary="Heun's second-order steps (Karras et al. 2022, Alg. 1/2): Euler "
                "predictor, trapezoidal corrector; two model calls per step."),
    "heunpp2": SamplerSpec(
        fn=heunpp2, calls_per_step=3, order=1, stochastic=False,
        summary="Heun++: averages slopes at up to three noise levels, weighted "
                "towards plain Euler as the noise falls; up to three calls per step."),
    "dpm_2": SamplerSpec(
        fn=dpm_2, calls_per_step=2, order=2, stochastic=False,
        summary="DPM-Solver-2-style midpoint steps: the slope at the geometric mean "
                "of the two noise levels drives each step."),
    "dpm_2_ancestral": SamplerSpec(
        fn=dpm_2_ancestral, calls_per_step=2, order=2, stochastic=True,
        summary="DPM-Solver-2 midpoint steps to a lower noise "
                "level, then fresh noise (ancestral sampling)."),
}
