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


class _Stages:
    """One SEEDS step from sigmas[i] to sigmas[i + 1]: the exact SDE step to lambda_s + c h with D linear in lambda,
    its noise from the step's one Brownian path, and the model's call there."""

    def __init__(self, model, x, sigmas, i, s_in, extra_args, eta, s_noise, noise_sampler, noise_model):
        self.model, self.x, self.s_in, self.extra_args = model, x, s_in, extra_args
        self.eta, self.s_noise, self.noise_model = eta, s_noise, noise_model
        self.sigma, self.sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        self.lam = noise_model.lambda_of(self.sigma)
        self.h = h = noise_model.lambda_of(self.sigma_next) - self.lam
        self.z = (1 + eta) * h
        self.brownian = _BrownianSegments(noise_sampler, lambda c: _node(sigmas, i, h, c, noise_model), eta * h)

    def denoised_at(self, c, denoised, weight=None, difference=None):
        """D at lambda_s + c h, from the sample there (see at)."""
        sigma_c = self.noise_model.sigma_of(self.lam + c * self.h)
        return self.model(self.at(c, sigma_c, denoised, weight, difference), sigma_c * self.s_in, **self.extra_args)

    def at(self, c, sigma_c, denoised, weight=None, difference=None):
        """x at lambda_s + c h (sigma_c): D held at `denoised`, plus weight * difference as D's linear part (z phi_2),
        plus the noise."""
        alpha_c = self.noise_model.alpha(sigma_c)
        decay = math.exp(-self.eta * c * self.h)
        u = (sigma_c / self.sigma) * decay * self.x - alpha_c * h_phi(1, -c * self.z) * denoised
        if difference is not None:
            u = u - alpha_c * weight * h_phi(2, -c * self.z) * difference
        if self.eta > 0 and self.s_noise > 0:
            u = u + self.brownian.advance(c) * (sigma_c * self.s_noise)
        return u

    def end(self, denoised, weight=None, difference=None):
        """x at sigma_next (see at)."""
        return self.at(1.0, self.sigma_next, denoised, weight, difference)


def _seeds(step, model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, noise_model):
    """The SEEDS loop: one model call, then step(stages, denoised) on to sigma_next (to sigma = 0: the denoised)."""
    extra_args, noise_sampler, s_in = prepare(x, extra_args, noise_sampler)
    noise_model = noise_model_of(noise_model)
    sigmas = noise_model.log_snr_start(torch.as_tensor(sigmas))
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, i, x, sigmas[i], sigmas[i], denoised)
        if float(sigmas[i + 1]) == 0:
            x = denoised
            continue
        x = step(_Stages(model, x, sigmas, i, s_in, extra_args, eta, s_noise, noise_sampler, noise_model), denoised)
    return x


@torch.no_grad()
def seeds_2(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
            noise_sampler=None, r=0.5, noise_model="ve"):
    """SEEDS-2: two-stage stochastic exponential Runge-Kutta, data prediction (Gonzalez et al. 2023)."""

    def step(stages, denoised):
        """The stage at lambda_s + r h, then the step with D and D_1 combined to second order."""
        denoised_1 = stages.denoised_at(r, denoised)
        return stages.end(torch.lerp(denoised, denoised_1, 1 / (2 * r)))

    return _seeds(step, model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, noise_model)


@torch.no_grad()
def seeds_3(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
            noise_sampler=None, r_1=1 / 3, r_2=2 / 3, noise_model="ve"):
    """SEEDS-3: three-stage stochastic exponential Runge-Kutta, data prediction (Gonzalez et al. 2023)."""

    def step(stages, denoised):
        """Stages at lambda_s + r_1 h and r_2 h, then the step (third order)."""
        denoised_1 = stages.denoised_at(r_1, denoised)
        # D linear in lambda through (s, D) and (s + r_1 h, D_1)
        denoised_2 = stages.denoised_at(r_2, denoised, r_2 / r_1, denoised_1 - denoised)
        # D linear in lambda through (s, D) and (s + r_2 h, D_2)
        return stages.end(denoised, 1 / r_2, denoised_2 - denoised)

    return _seeds(step, model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, noise_model)


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
