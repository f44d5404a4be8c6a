"""The shared maths of the exponential integrators, written once: log-SNR time and the phi functions.

For an EDM / variance-exploding denoiser (x = x0 + sigma * eps, alpha = 1) the log-SNR time is lambda = -log(sigma).
In lambda the probability-flow ODE has a linear part that an exponential integrator solves exactly, and the
model's part is integrated against it with the phi functions: a data-prediction step of length h puts weight
h phi_k(-h) = -h_phi(k, -h) on the k-th term of D's expansion, a noise-prediction step h phi_k(h) = h_phi(k, h).
Every function takes Python numbers or tensors and returns the same kind.
"""
import math

import torch


def lambda_of(sigma):
    """lambda = log(alpha / sigma) = -log(sigma), the half log-SNR (Lu et al. 2022, DPM-Solver / DPM-Solver++)."""
    return sigma.log().neg() if isinstance(sigma, torch.Tensor) else -math.log(sigma)


def sigma_of(lam):
    """sigma = e^(-lambda), the inverse of lambda_of (Lu et al. 2022, DPM-Solver / DPM-Solver++)."""
    return lam.neg().exp() if isinstance(lam, torch.Tensor) else math.exp(-lam)


def h_phi(k, h):
    """h phi_k(h) of exponential integrators (Hochbruck & Ostermann 2010): e^h - 1, then phi_(k-1)(h) - 1/(k-1)!."""
    value = h.expm1() if isinstance(h, torch.Tensor) else math.expm1(h)
    for j in range(1, k):
        value = value / h - 1 / math.factorial(j)
    return value


def sde_noise_std(rate_h):
    """sqrt(1 - e^(-2 eta h)) for rate_h = eta h: an exact SDE step's noise over sigma_next (Lu et al. 2022)."""
    return (-h_phi(1, -2 * rate_h)) ** 0.5
