"""SEEDS (Gonzalez et al. 2023, "SEEDS: Exponential SDE Solvers for Fast High-Quality Sampling from Diffusion
Models", arXiv:2305.14267): stochastic explicit exponential derivative-free solvers, data prediction.

The denoiser is taken as an EDM / variance-exploding one (x = x0 + sigma * eps), so lambda = -log(sigma).
With eta scaling the noise, the SDE step s -> t (h = lambda_t - lambda_s) is, exactly,

    x_t = (sigma_t / sigma_s) e^{-eta h} x_s + int (1 + eta) e^{-(1 + eta)(lambda_t - u)} D(u) du
          + sigma_t sqrt(1 - e^{-2 eta h}) z.

SEEDS approximates D(u) Runge-Kutta style from model calls at intermediate nodes lambda_s + c h, and draws
the noise of the sub-steps from one Brownian path, so the full step's noise continues the stages' noise.
eta = 0 gives the deterministic (DPM-Solver++-like) exponential Runge-Kutta method. With z = (1 + eta) h the
weights of D's constant and linear parts are z phi_1(-z) = -h_phi(1, -z) and z phi_2(-z) = -h_phi(2, -z).

For a rectified-flow model (noise_model="flow": x = alpha x0 + sigma eps, alpha = 1 - sigma) lambda = log(alpha / sigma)
and each stage's D weights carry alpha at the stage's end (the x and noise terms keep their sigma ratios); a first
sigma of 1 (lambda = -inf) is moved just below 1.
"""
import math

import torch

from .common import SamplerSpec, prepare, report
from .exponential import h_phi, sde_noise_std
from .noise_model import noise_model_of


class _BrownianSegments:
    """The unit-variance noise of an Ornstein-Uhlenbeck path, advanced one sub-step at a time.

    Advancing from c_0 to c (fractions of the step) decays the noise so far by e^{-eta h (c - c_0)} and adds fresh
    noise; the total variance is 1 - e^{-2 eta c h}, exactly the noise of an exact step from s to c.
    """

    def __init__(self, noise_sampler, sigmas_at, rate):
        self.noise_sampler, self.sigmas_at, self.rate = noise_sampler, sigmas_at, rate
        self.value, self.c = 0.0, 0.0

    def advance(self, c):
        decay = self.rate * (c - self.c)
        fresh = self.noise_sampler(self.sigmas_at(self.c), self.sigmas_at(c))
        self.value = self.value * math.exp(-decay) + fresh * sde_noise_std(decay)
        self.c = c
        return self.value


def _node(sigmas, i, h, c, noise_model):
    """sigma at lambda_s + c h, as a tensor like the given sigmas (what a noise sampler expects)."""
    if c == 0:
        return sigmas[i]
    if c == 1:
        return sigmas[i + 1]
    return sigmas.new_tensor(noise_model.sigma_of(noise_model.lambda_of(float(sigmas[i])) + c * h))


@torch.no_grad()
def seeds_2(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
            noise_sampler=None, r=0.5, noise_model="ve"):
    """SEEDS-2: two-stage stochastic exponential Runge-Kutta, data prediction (Gonzalez et al. 2023)."""
    extra_args, noise_sampler, s_in = prepare(x, extra_args, noise_sampler)
    noise_model = noise_model_of(noise_model)
    sigmas = noise_model.log_snr_start(torch.as_tensor(sigmas))
    stochastic = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, i, x, sigmas[i], sigmas[i], denoised)
        if sigma_next == 0:
            x = denoised
            continue
        lam = noise_model.lambda_of(sigma)
        h = noise_model.lambda_of(sigma_next) - lam
        z = (1 + eta) * h
        sigma_1 = noise_model.sigma_of(lam + r * h)
        alpha_1, alpha_next = noise_model.alpha(sigma_1), noise_model.alpha(sigma_next)
        brownian = _BrownianSegments(noise_sampler, lambda c: _node(sigmas, i, h, c, noise_model), eta * h)

        u = (sigma_1 / sigma) * math.exp(-eta * r * h) * x - alpha_1 * h_phi(1, -r * z) * denoised
        if stochastic:
            u = u + brownian.advance(r) * (sigma_1 * s_noise)
        denoised_1 = model(u, sigma_1 * s_in, **extra_args)

        denoised_bar = torch.lerp(denoised, denoised_1, 1 / (2 * r))
        x = (sigma_next / sigma) * math.exp(-eta * h) * x - alpha_next * h_phi(1, -z) * denoised_bar
        if stochastic:
            x = x + brownian.advance(1.0) * (sigma_next * s_noise)
    return x


@torch.no_grad()
def seeds_3(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
            noise_sampler=None, r_1=1 / 3, r_2=2 / 3, noise_model="ve"):
    """SEEDS-3: three-stage stochastic exponential Runge-Kutta, data prediction (Gonzalez et al. 2023)."""
    extra_args, noise_sampler, s_in = prepare(x, extra_args, noise_sampler)
    noise_model = noise_model_of(noise_model)
    sigmas = noise_model.log_snr_start(torch.as_tensor(sigmas))
    stochastic = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, i, x, sigmas[i], sigmas[i], denoised)
        if sigma_next == 0:
            x = denoised
            continue
        lam = noise_model.lambda_of(sigma)
        h = noise_model.lambda_of(sigma_next) - lam
        z = (1 + eta) * h
        sigma_1, sigma_2 = noise_model.sigma_of(lam + r_1 * h), noise_model.sigma_of(lam + r_2 * h)
        alpha_1, alpha_2 = noise_model.alpha(sigma_1), noise_model.alpha(sigma_2)
        alpha_next = noise_model.alpha(sigma_next)
        brownian = _BrownianSegments(noise_sampler, lambda c: _node(sigmas, i, h, c, noise_model), eta * h)

        u_1 = (sigma_1 / sigma) * math.exp(-eta * r_1 * h) * x - alpha_1 * h_phi(1, -r_1 * z) * denoised
        if stochastic:
            u_1 = u_1 + brownian.advance(r_1) * (sigma_1 * s_noise)
        denoised_1 = model(u_1, sigma_1 * s_in, **extra_args)

        # D linear in lambda through (s, D) and (s + r_1 h, D_1)
        u_2 = ((sigma_2 / sigma) * math.exp(-eta * r_2 * h) * x - alpha_2 * h_phi(1, -r_2 * z) * denoised
               - alpha_2 * (r_2 / r_1) * h_phi(2, -r_2 * z) * (denoised_1 - denoised))
        if stochastic:
            u_2 = u_2 + brownian.advance(r_2) * (sigma_2 * s_noise)
        denoised_2 = model(u_2, sigma_2 * s_in, **extra_args)

        # D linear in lambda through (s, D) and (s + r_2 h, D_2)
        x = ((sigma_next / sigma) * math.exp(-eta * h) * x - alpha_next * h_phi(1, -z) * denoised
             - alpha_next * (1 / r_2) * h_phi(2, -z) * (denoised_2 - denoised))
        if stochastic:
            x = x + brownian.advance(1.0) * (sigma_next * s_noise)
    return x


SPECS = {
    "seeds_2": SamplerSpec(
        fn=seeds_2, calls_per_step=2.0, order=2, stochastic=True,
        summary="SEEDS-2: two-stage stochastic exponential Runge-Kutta (data prediction), two model calls per "
                "step; eta scales the noise (eta = 0: deterministic)."),
    "seeds_3": SamplerSpec(
        fn=seeds_3, calls_per_step=3.0, order=3, stochastic=True,
        summary="SEEDS-3: three-stage stochastic exponential Runge-Kutta (data prediction), three model calls "
                "per step; eta scales the noise (eta = 0: deterministic)."),
}
