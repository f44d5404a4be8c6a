"""SA-Solver (Xue et al. 2023, "SA-Solver: Stochastic Adams Solver for Fast Sampling of Diffusion Models",
arXiv:2309.05019): stochastic Adams predictor-corrector in data prediction.

The denoiser is taken as an EDM / variance-exploding one (x = x0 + sigma * eps), so lambda = -log(sigma).
With tau(t) the stochasticity, the SDE step s -> t (h = lambda_t - lambda_s, c = 1 + tau^2) is, exactly,

    x_t = (sigma_t / sigma_s) e^{-tau^2 h} x_s + int c e^{-c (lambda_t - u)} D(u) du
          + sigma_t sqrt(1 - e^{-2 tau^2 h}) z.

The Adams predictor replaces D by its Lagrange interpolant through the last model outputs; the corrector
does the same once the model has been called at the predicted point, with that node included, and keeps
the predictor's noise. tau = eta inside a band of sigmas, 0 (an ODE step) outside it.

For a rectified-flow model (noise_model="flow": x = alpha x0 + sigma eps, alpha = 1 - sigma) lambda = log(alpha / sigma)
and the D terms carry alpha_t; a first sigma of 1 (lambda = -inf) is moved just below 1.
"""
import functools
import math

import torch

from .common import SamplerSpec, prepare, report
from .exponential import h_phi, sde_noise_std
from .noise_model import noise_model_of

# ComfyUI's default SDE band: percent_to_sigma(0.2) and percent_to_sigma(0.8) of the SD1.x / SDXL discrete
# schedule (scaled-linear betas 0.00085..0.012, 1000 steps), i.e. timesteps 799.2 and 199.8.
SDE_SIGMA_MAX = 5.092408180236816
SDE_SIGMA_MIN = 0.5711888670921326
# The same 20 %..80 % of the way for a rectified-flow model with shift 1 (sigma = t); the nodes pass the model's own.
FLOW_SDE_SIGMA_MAX, FLOW_SDE_SIGMA_MIN = 0.8, 0.2


def _exponential_moments(a, count):
    """m_p = int_0^1 a e^{-a v} v^p dv for p < count (a > 0): by series for small a, else by recursion."""
    if a < 1.0:  # e^{-a v} = sum_k (-a v)^k / k!, exact to rounding after 30 terms for a < 1
        return [a * sum((-a) ** k / (math.factorial(k) * (p + k + 1)) for k in range(30)) for p in range(count)]
    moments = [-h_phi(1, -a)]
    for p in range(1, count):  # integration by parts: m_p = (p / a) m_{p-1} - e^{-a}
        moments.append(p / a * moments[-1] - math.exp(-a))
    return moments


def stochastic_adams_weights(lams, lam_s, lam_t, tau):
    """b_j = int_{lam_s}^{lam_t} c e^{-c (lam_t - u)} l_j(u) du for the Lagrange basis l_j on the nodes `lams`.

    In v = (lam_t - u) / h the weight is a e^{-a v} on [0, 1] (a = c h); the nodes sit at v_j = (lam_t - lam_j) / h,
    and sum_j b_j v_j^p = m_p (the moments) is a small Vandermonde system.
    """
    h = lam_t - lam_s
    moments = _exponential_moments((1 + tau**2) * h, len(lams))
    nodes = torch.tensor([(lam_t - lam) / h for lam in lams], dtype=torch.float64)
    vandermonde_t = torch.stack([nodes**p for p in range(len(lams))])
    return torch.linalg.solve(vandermonde_t, torch.tensor(moments, dtype=torch.float64)).tolist()


def simple_order_2_weights(lams, lam_s, lam_t, tau, corrector):
    """The paper's simplified two-node weights (its Appendix D): D's slope term integrated with e^{...} ~ 1."""
    c, h = 1 + tau**2, lam_t - lam_s
    total = -h_phi(1, -c * h)
    if corrector:  # nodes (lam_s, lam_t): trapezoid-like split
        newest = c * h / 2
        return [total - newest, newest]
    # nodes (lam_prev, lam_s): D's slope (D_s - D_prev) / (lam_s - lam_prev) integrated over h with weight ~ c
    older = -c * h**2 / (2 * (lams[-1] - lams[-2]))
    return [older, total - older]


def _combine(weights, outputs):
    """sum_j b_j D_j"""
    return sum(w * d for w, d in zip(weights, outputs))


def sde_band(eta=1.0, sigma_max=SDE_SIGMA_MAX, sigma_min=SDE_SIGMA_MIN):
    """tau(sigma) = eta for sigma_min <= sigma <= sigma_max, else 0 (the paper's interval choice, in sigma)."""

    def tau_func(sigma):
        return eta if eta > 0 and sigma_min <= float(sigma) <= sigma_max else 0.0

    return tau_func


@torch.no_grad()
def sa_solver(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, sde_sigma_max=None,
              sde_sigma_min=None, tau_func=None, s_noise=1.0, noise_sampler=None, predictor_order=3,
              corrector_order=4, use_pece=False, simple_order_2=False, noise_model="ve"):
    """SA-Solver: stochastic Adams predictor (order p) and corrector (order c) in data prediction (Xue et al. 2023)."""
    # sde_sigma_max / sde_sigma_min: the noise band; None: SD1.x's (VE) or a shift-1 flow's, 20 %..80 % of the way
    extra_args, noise_sampler, s_in = prepare(x, extra_args, noise_sampler)
    noise_model = noise_model_of(noise_model)
    sigmas = noise_model.log_snr_start(sigmas)
    if tau_func is None:
        top, bottom = (FLOW_SDE_SIGMA_MAX, FLOW_SDE_SIGMA_MIN) if noise_model.flow else (SDE_SIGMA_MAX, SDE_SIGMA_MIN)
        tau_func = sde_band(eta, top if sde_sigma_max is None else sde_sigma_max,
                            bottom if sde_sigma_min is None else sde_sigma_min)
    n = len(sigmas) - 1
    floats = [float(s) for s in sigmas]
    lams = [noise_model.lambda_of(s) if s > 0 else math.inf for s in floats]
    alphas = [noise_model.alpha(s) for s in floats]
    lower_order_to_end = n > 0 and floats[-1] == 0  # lower orders near the end, as ComfyUI does

    def weights(nodes, lam_s, lam_t, tau, corrector):
        if simple_order_2 and len(nodes) == 2:
            return simple_order_2_weights(nodes, lam_s, lam_t, tau, corrector)
        return stochastic_adams_weights(nodes, lam_s, lam_t, tau)

    x_pred, tau, h, noise = x, 0.0, 0.0, None
    history = []  # model outputs D at lams[i - len + 1 .. i]
    for i in range(n):
        denoised = model(x_pred, sigmas[i] * s_in, **extra_args)
        report(callback, i, x_pred, sigmas[i], sigmas[i], denoised)
        history = (history + [denoised])[-max(predictor_order, corrector_order, 1):]
        p = min(predictor_order, len(history))
        c = 0 if i == 0 or (floats[i + 1] == 0 and not use_pece) else min(corrector_order, len(history))
        if lower_order_to_end:
            p, c = min(p, n - 1 - i), min(c, n - i)

        if c == 0:
            x = x_pred
        else:  # corrector: the same step lams[i - 1] -> lams[i], now with D at lams[i] among the nodes
            b = weights(lams[i - c + 1:i + 1], lams[i - 1], lams[i], tau, corrector=True)
            x = (floats[i] / floats[i - 1]) * math.exp(-tau**2 * h) * x + alphas[i] * _combine(b, history[-c:])
            if noise is not None:
                x = x + noise
            if use_pece:
                denoised = model(x, sigmas[i] * s_in, **extra_args)
                history[-1] = denoised

        if floats[i + 1] == 0:
            x = denoised
            continue
        # predictor: lams[i] -> lams[i + 1] through the last p model outputs
        tau = float(tau_func(sigmas[i + 1]))
        h = lams[i + 1] - lams[i]
        b = weights(lams[i - p + 1:i + 1], lams[i], lams[i + 1], tau, corrector=False)
        x_pred = (floats[i + 1] / floats[i]) * math.exp(-tau**2 * h) * x + alphas[i + 1] * _combine(b, history[-p:])
        noise = None
        if tau > 0 and s_noise > 0:
            scale = floats[i + 1] * sde_noise_std(tau**2 * h) * s_noise
            noise = noise_sampler(sigmas[i], sigmas[i + 1]) * scale
            x_pred = x_pred + noise
    return x if n == 0 or floats[-1] == 0 else x_pred


# SA-Solver in PECE mode: the model is called again at each corrected point (Xue et al. 2023).
sa_solver_pece = functools.partial(sa_solver, use_pece=True)


SPECS = {
    "sa_solver": SamplerSpec(
        fn=sa_solver, calls_per_step=1.0, order=4, stochastic=True,
        summary="SA-Solver: stochastic Adams predictor (order 3) and corrector (order 4), one model call per "
                "step; noise (tau = eta) only from 20 % to 80 % of the way (SD1.x: sigma 5.09 to 0.57), ODE outside."),
    "sa_solver_pece": SamplerSpec(
        fn=sa_solver_pece, calls_per_step=2.0, order=4, stochastic=True,
        summary="SA-Solver in PECE mode: the model is re-evaluated at every corrected point, two model calls "
                "per step; sturdier at large steps."),
}
