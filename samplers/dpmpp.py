"""DPM-Solver++ (Lu et al. 2022, arXiv:2211.01095): exponential integrators in lambda = log(alpha / sigma)
written for data prediction D(x, sigma), with the single-step (2S), multistep (2M, 3M) and SDE forms.

The denoiser is taken as an EDM / variance-exploding one (alpha = 1): lambda = -log(sigma),
sigma(lambda) = exp(-lambda), and a step from sigma to sigma_next with h = lambda_next - lambda reads
x_next = (sigma_next / sigma) x - expm1(-h) D. The multistep SDE forms are k-diffusion's
(SDE-DPM-Solver++): with D held fixed over a step, the reverse SDE whose noise is scaled by eta is
solved exactly, x_next = (sigma_next / sigma) e^(-eta h) x + (1 - e^(-(1 + eta) h)) D
+ sigma_next sqrt(1 - e^(-2 eta h)) z, plus the multistep corrections; eta = 0 is the ODE solver.
The noise comes from `noise_sampler(sigma, sigma_next)` if given, else from the CPU generator seeded
by extra_args["seed"] (ComfyUI's own dpmpp_sde / *_m_sde draw from a Brownian tree instead).

For a rectified-flow model (noise_model="flow": x = alpha x0 + sigma eps, alpha = 1 - sigma; see noise_model.py) the
stochastic forms run in the half log-SNR lambda = log(alpha / sigma) and carry alpha_next on D:
x_next = (sigma_next / sigma) e^(-eta h) x + alpha_next (1 - e^(-(1 + eta) h)) D + sigma_next sqrt(1 - e^(-2 eta h)) z,
starting just below sigma = 1 (where lambda = -inf); the ancestral 2S uses the flow's ancestral split.
DPM-Solver++(2M) integrates the probability-flow ODE alone, which is the same for both: it takes no noise_model.
"""
from functools import partial

import torch

from .common import SamplerSpec, ancestral_step, prepare, report
from .euler import ancestral_loop
from .exponential import h_phi, lambda_of, sde_noise_std
from .noise_model import FLOW_FIRST_STAGE, noise_model_of


def _2s_step(model, x, sigma, sigma_down, denoised, s_in, extra_args, noise_model):
    """DPM-Solver++(2S) from sigma to sigma_down: exponential Euler, (sigma_t / sigma) x + (1 - sigma_t / sigma) D,
    to the stage halfway in lambda, then with its D over the whole step (to sigma = 0: the denoised estimate)."""
    if sigma_down == 0:
        return denoised
    if noise_model.flow and sigma >= 1:
        sigma_s = FLOW_FIRST_STAGE  # lambda(1) = -inf: no halfway point
    else:
        sigma_s = noise_model.sigma_of((noise_model.lambda_of(sigma) + noise_model.lambda_of(sigma_down)) / 2)
    u = (sigma_s / sigma) * x + (1 - sigma_s / sigma) * denoised
    denoised_s = model(u, sigma_s * s_in, **extra_args)
    return (sigma_down / sigma) * x + (1 - sigma_down / sigma) * denoised_s


@torch.no_grad()
def dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                       noise_sampler=None, noise_model="ve"):
    """DPM-Solver++(2S) (Lu et al. 2022, Algorithm 1, r = 1/2) to sigma_down, then ancestral noise to sigma_next."""
    step = partial(_2s_step, noise_model=noise_model_of(noise_model))
    return ancestral_loop(step, model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, noise_model,
                          renoise_whenever_noisy=True)


@torch.no_grad()
def dpmpp_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
              noise_sampler=None, r=1 / 2, noise_model="ve"):
    """Stochastic DPM-Solver++(2S) (Lu et al. 2022, Algorithm 1, stage at lambda + r h), noise at both stages."""
    extra_args, noise_sampler, s_in = prepare(x, extra_args, noise_sampler)
    noise_model = noise_model_of(noise_model)
    sigmas = noise_model.log_snr_start(sigmas)
    noisy = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        report(callback, i, x, sigma, sigma, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        lam, lam_next = noise_model.lambda_of(sigma), noise_model.lambda_of(sigma_next)
        h = lam_next - lam
        sigma_s = noise_model.sigma_of(lam + r * h)
        alpha, ratio = noise_model.alpha(sigma), noise_model.ratio(sigma)  # ratio = sigma / alpha = e^(-lambda)

        def ancestral(sigma_to, denoised_d):
            """x at sigma_to: the step's deterministic part to a lower noise-to-signal ratio (Song et al. 2021's split
            of sigma_to / alpha_to), exact for D held fixed, then alpha_to times the noise that restores the ratio."""
            alpha_to = noise_model.alpha(sigma_to)
            ratio_down, ratio_up = ancestral_step(ratio, noise_model.ratio(sigma_to), eta)
            x_to = ((alpha_to / alpha) * (ratio_down / ratio) * x
                    - alpha_to * h_phi(1, lam - lambda_of(ratio_down)) * denoised_d)
            if noisy:
                x_to = x_to + noise_sampler(sigma, sigma_to) * s_noise * (alpha_to * ratio_up)
            return x_to

        # Stage 1: first-order step to the intermediate lambda + r h.
        denoised_s = model(ancestral(sigma_s, denoised), sigma_s * s_in, **extra_args)
        # Stage 2: the step to sigma_next with D_s corrected to second order in h.
        x = ancestral(sigma_next, (1 - 1 / (2 * r)) * denoised + 1 / (2 * r) * denoised_s)
    return x


@torch.no_grad()
def dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): second-order multistep on the last two denoised estimates."""
    extra_args, _, s_in = prepare(x, extra_args, None)
    denoised_prev = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        report(callback, i, x, sigma, sigma, denoised)
        if sigma_next == 0:
            x = denoised
        else:
            lam, lam_next = lambda_of(sigma), lambda_of(sigma_next)
            h = lam_next - lam
            if denoised_prev is None:
                denoised_d = denoised
            else:
                r = (lam - lambda_of(sigmas[i - 1])) / h  # h_last / h
                denoised_d = (1 + 1 / (2 * r)) * denoised - 1 / (2 * r) * denoised_prev
            x = (sigma_next / sigma) * x - h_phi(1, -h) * denoised_d
        denoised_prev = denoised
    return x


def _sde_step(x, denoised, sigma, sigma_next, eta, noise_model):
    """The first-order part of a DPM-Solver++ SDE step: exact linear drift, denoised held constant; and alpha_next."""
    h = noise_model.lambda_of(sigma_next) - noise_model.lambda_of(sigma)
    h_eta = h * (eta + 1)
    alpha_next = noise_model.alpha(sigma_next)
    x = (sigma_next / sigma) * (-h * eta).exp() * x - alpha_next * h_phi(1, -h_eta) * denoised
    return x, h, h_eta, alpha_next


def _sde_noise(noise_sampler, sigma, sigma_next, h, eta, s_noise):
    """Noise that the SDE step injects: sigma_next * sqrt(1 - exp(-2 eta h)) * z."""
    return noise_sampler(sigma, sigma_next) * sigma_next * sde_noise_std(h * eta) * s_noise


def _multistep_sde(correction, model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, noise_model):
    """A multistep DPM-Solver++ SDE: each step first order (_sde_step), plus correction(x, denoised, h, h_eta,
    alpha_next, past) from the last two steps' (denoised, h), newest first, plus the step's noise."""
    extra_args, noise_sampler, s_in = prepare(x, extra_args, noise_sampler)
    noise_model = noise_model_of(noise_model)
    sigmas = noise_model.log_snr_start(sigmas)
    past = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        report(callback, i, x, sigma, sigma, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        x, h, h_eta, alpha_next = _sde_step(x, denoised, sigma, sigma_next, eta, noise_model)
        x = correction(x, denoised, h, h_eta, alpha_next, past)
        if eta > 0 and s_noise > 0:
            x = x + _sde_noise(noise_sampler, sigma, sigma_next, h, eta, s_noise)
        past = [(denoised, h), *past[:1]]
    return x


def _2m_correction(x, denoised, h, h_eta, alpha_next, past, solver_type):
    """DPM-Solver++(2M)'s second-order term from the first difference of the last two denoised estimates."""
    if not past:
        return x
    denoised_prev, h_prev = past[0]
    d1 = (denoised - denoised_prev) * (h / h_prev)  # first difference scaled to this step: (D - D_prev) / r
    if solver_type == "heun":
        return x - alpha_next * h_phi(2, -h_eta) * d1  # + h phi_2(-h_eta) D' for data prediction
    return x - alpha_next * 0.5 * h_phi(1, -h_eta) * d1


@torch.no_grad()
def dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                 noise_sampler=None, solver_type="midpoint", noise_model="ve"):
    """DPM-Solver++(2M) SDE (Lu et al. 2022; k-diffusion's SDE form): 2M with eta-scaled noise, midpoint or heun."""
    if solver_type not in ("midpoint", "heun"):
        raise ValueError("solver_type must be 'midpoint' or 'heun'")
    return _multistep_sde(partial(_2m_correction, solver_type=solver_type), model, x, sigmas, extra_args, callback,
                          eta, s_noise, noise_sampler, noise_model)


def _3m_correction(x, denoised, h, h_eta, alpha_next, past):
    """DPM-Solver++(3M)'s first- and second-derivative terms from the last three denoised estimates."""
    phi_2 = -alpha_next * h_phi(2, -h_eta)  # h_eta phi_2(-h_eta), the weight of the first derivative
    if len(past) == 2:
        (denoised_1, h_1), (denoised_2, h_2) = past
        r0, r1 = h_1 / h, h_2 / h
        d1_0 = (denoised - denoised_1) / r0
        d1_1 = (denoised_1 - denoised_2) / r1
        d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)  # first derivative, second-order accurate
        # h^2 D''/2 (not h^2 D''), weighted by -phi_3 as in k-diffusion and the DPM-Solver reference
        # code: ComfyUI's results, but it leaves an O(h^3) local error, so the method is second
        # order as h -> 0 (steeper, problem-dependent, at practical step counts; see test_samplers_order.py).
        d2 = (d1_0 - d1_1) / (r0 + r1)
        phi_3 = alpha_next * h_phi(3, -h_eta)  # -h_eta phi_3(-h_eta)
        return x + phi_2 * d1 - phi_3 * d2
    if past:
        denoised_1, h_1 = past[0]
        return x + phi_2 * (denoised - denoised_1) / (h_1 / h)
    return x


@torch.no_grad()
def dpmpp_3m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                 noise_sampler=None, noise_model="ve"):
    """DPM-Solver++(3M) SDE (Lu et al. 2022; k-diffusion's SDE form): three-point multistep, eta-scaled noise."""
    return _multistep_sde(_3m_correction, model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler,
                          noise_model)


SPECS = {
    "dpmpp_2s_ancestral": SamplerSpec(
        fn=dpmpp_2s_ancestral, calls_per_step=2.0, order=2, stochastic=True,
        summary="DPM-Solver++(2S): a second-order single step per sigma, plus ancestral noise (eta)."),
    "dpmpp_sde": SamplerSpec(
        fn=dpmpp_sde, calls_per_step=2.0, order=2, stochastic=True,
        summary="Stochastic DPM-Solver++(2S): two model calls per step with noise at both stages (eta, r)."),
    "dpmpp_2m": SamplerSpec(
        fn=dpmpp_2m, calls_per_step=1.0, order=2, stochastic=False,
        summary="DPM-Solver++(2M): second-order multistep, one model call per step; a sharp default."),
    "dpmpp_2m_sde": SamplerSpec(
        fn=dpmpp_2m_sde, calls_per_step=1.0, order=2, stochastic=True,
        summary="DPM-Solver++(2M) SDE: 2M with fresh noise each step (eta; midpoint or heun correction)."),
    "dpmpp_3m_sde": SamplerSpec(
        fn=dpmpp_3m_sde, calls_per_step=1.0, order=2, stochastic=True,
        summary="DPM-Solver++(3M) SDE: three-point multistep with fresh noise each step (eta); second order in "
                "the limit (k-diffusion's weights), steeper at 8-32 steps."),
}
