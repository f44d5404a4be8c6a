"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion
Models", arXiv:2302.04867), multistep, data prediction, with B(h) = h (bh1) or B(h) = e^h - 1 (bh2).

The denoiser is taken as an EDM / variance-exploding one (x = x0 + sigma * eps, alpha = 1), so
lambda = -log(sigma); UniPC's VP update is the same map after scaling x by alpha. For a step s -> t,
h = lambda_t - lambda_s and, with the model outputs D_m at earlier nodes lambda_m, r_m = (lambda_m - lambda_s) / h,

    predictor  UniP-p:  x_t = (sigma_t / sigma_s) x_s + (1 - e^{-h}) D_s - B(h) sum_m a_m (D_m - D_s) / r_m
    corrector  UniC-p:  the same with the new model output D_t at r = 1 added to the sum,

where the weights solve sum_m r_m^(k-1) a_m = g_k = k! (-h) phi_{k+1}(-h) / B(-h) for k = 1..p (data prediction
evaluates B and the phi functions at -h; the predictor uses its p - 1 earlier nodes and rows).
The corrector reuses the model call that the next step needs anyway, so UniPC costs one call per step, and it
lifts the predictor's order p to p + 1 (Zhao et al. 2023, Theorem 3.1): order=3 is a fourth-order method.
Like every other sampler here it finishes a schedule that ends in 0 with the denoising jump x = D(x, sigma_min)
(log-SNR is infinite at 0): the model call at sigma_min that the corrector would reuse gives the result, so the
cost stays one call per sigma step. (ComfyUI instead replaces the final 0 by 0.001 and integrates one more ODE step
of fixed size sigma_min -> 0.001 whatever the number of steps; that caps its accuracy, see
tests/in_comfy/test_samplers_modern_parity.py.) The last steps use lower orders (lower_order_final; the jump counts
as the last step), and the last step of a schedule that stops above 0 runs no corrector. UniPC only integrates the
probability-flow ODE, which is the same for rectified-flow models (see noise_model.py), so it runs on those as it is.
"""
import math

import torch

from .common import SamplerSpec, report, split_extra_args
from .exponential import h_phi, lambda_of


def _unipc_weights(h, r, variant, order, corrector):
    """UniP-p (corrector=False) or UniC-p weights a, and B(h), for data prediction (z = -h)."""
    z = -h
    b_h = z if variant == "bh1" else h_phi(1, z)
    g = [math.factorial(k) * h_phi(k + 1, z) / b_h for k in range(1, order + 1)]  # g_k, k = 1..order
    size = order if corrector else order - 1
    if size == 0:
        return [], b_h
    if size == 1:
        return [0.5], b_h  # the reference code's simplified choice for UniP-2 and UniC-1
    nodes = torch.tensor(r[:size], dtype=torch.float64)
    R = torch.stack([nodes**k for k in range(size)])
    return torch.linalg.solve(R, torch.tensor(g[:size], dtype=torch.float64)).tolist(), b_h


@torch.no_grad()
def _unipc(model, x, sigmas, extra_args, callback, variant, order, lower_order_final):
    """Multistep UniPC-p with the corrector after every step but the last (one model call per step), then the
    denoising jump to a final sigma of 0."""
    extra_args, _ = split_extra_args(extra_args)
    given = sigmas
    sigmas = [float(s) for s in given]  # a copy: the caller's sigmas stay as they are
    jump = sigmas[-1] == 0  # finish with x = D(x, sigma_min)
    if jump:
        sigmas = sigmas[:-1]
    s_in = x.new_ones([x.shape[0]])
    steps = len(sigmas) - 1  # steps between positive sigmas
    order = max(1, min(order, steps - 1 + jump))
    lams = [lambda_of(s) for s in sigmas]
    denoised = model(x, sigmas[0] * s_in, **extra_args)
    history = [(lams[0], denoised)]  # (lambda_m, D_m), newest last
    for k in range(1, steps + 1):
        report(callback, k - 1, x, given[k - 1], given[k - 1], denoised)  # x at sigma_{k-1}, D there
        p = min(order, k, steps + jump + 1 - k) if lower_order_final else min(order, k)
        lam_s, denoised_s = history[-1]
        h = lams[k] - lam_s
        earlier = history[-p:-1][::-1]  # the p - 1 nodes before s, newest first
        r = [(lam_m - lam_s) / h for lam_m, _ in earlier] + [1.0]
        d = [(denoised_m - denoised_s) / r_m for (_, denoised_m), r_m in zip(earlier, r)]
        x_base = (sigmas[k] / sigmas[k - 1]) * x - h_phi(1, -h) * denoised_s
        a, b_h = _unipc_weights(h, r, variant, p, corrector=False)
        x_pred = x_base - b_h * sum(a_m * d_m for a_m, d_m in zip(a, d)) if a else x_base
        if k == steps and not jump:
            return x_pred  # leftover noise: no model call after the last step, so no corrector
        denoised = model(x_pred, sigmas[k] * s_in, **extra_args)
        if k == steps:
            x = x_pred  # the corrector's result would be replaced by the jump below
            break
        a, b_h = _unipc_weights(h, r, variant, p, corrector=True)
        d.append(denoised - denoised_s)
        x = x_base - b_h * sum(a_m * d_m for a_m, d_m in zip(a, d))
        history = (history + [(lams[k], denoised)])[-order:]
    report(callback, steps, x, given[steps], given[steps], denoised)
    return denoised  # the denoising jump to sigma = 0: x = D(x, sigma_min)


def uni_pc(model, x, sigmas, extra_args=None, callback=None, disable=None, order=3, lower_order_final=True):
    """UniPC-p with B(h) = h: multistep UniP predictor + UniC corrector, data prediction (Zhao et al. 2023)."""
    return _unipc(model, x, sigmas, extra_args, callback, "bh1", order, lower_order_final)


def uni_pc_bh2(model, x, sigmas, extra_args=None, callback=None, disable=None, order=3, lower_order_final=True):
    """UniPC-p with B(h) = e^h - 1: multistep UniP predictor + UniC corrector, data prediction (Zhao et al. 2023)."""
    return _unipc(model, x, sigmas, extra_args, callback, "bh2", order, lower_order_final)


SPECS = {
    "uni_pc": SamplerSpec(
        fn=uni_pc, calls_per_step=1.0, order=4, stochastic=False,
        summary="UniPC (B(h) = h): third-order multistep predictor with a corrector that reuses the next "
                "model call (fourth order together), one call per step; suits unconditional sampling under "
                "10 steps."),
    "uni_pc_bh2": SamplerSpec(
        fn=uni_pc_bh2, calls_per_step=1.0, order=4, stochastic=False,
        summary="UniPC (B(h) = e^h - 1): third-order multistep predictor and corrector (fourth order together), "
                "one call per step; the usual choice with guidance or 10+ steps."),
}
