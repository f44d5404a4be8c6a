"""Linear multistep (Adams-Bashforth) samplers: each step reuses the slopes d = (x - D) / sigma of earlier steps.

All four integrate the probability-flow ODE dx/dsigma = d(x, sigma) with x_next = x + sum_j w_j d_{i-j},
the weights w_j = integral over [sigma_i, sigma_next] of the Lagrange basis polynomial L_j through the last
few steps. They differ only in the time variable the polynomial lives in and in how its nodes are spaced:

* ``lms``: polynomial in sigma, nodes at the actual sigmas (variable-step Adams-Bashforth).
* ``ipndm``: iPNDM (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator",
  sec. on PNDM): the fixed-step Adams-Bashforth weights (3/2, -1/2; 23/12, ...; 55/24, ...) times the actual
  step, with lower orders to start instead of PNDM's Runge-Kutta warm-up.
* ``ipndm_v``: iPNDM with variable steps, i.e. the exact variable-step weights (the same method as ``lms``).
* ``deis``: DEIS (Zhang & Chen 2023) tAB: polynomial in the VP-SDE time t(sigma); in the sigma variables the
  exponential integrator's transfer factor is 1, so the weight is the integral of L_j(t(sigma)) d sigma
  (``deis_mode="rhoab"``: polynomial in rho = sigma itself, i.e. ``lms`` again).

The weights are computed by Gauss-Legendre quadrature, exact for the polynomial cases and to rounding for DEIS.
"""
import functools
import math

import torch

from .common import SamplerSpec, report, split_extra_args, to_d


@functools.lru_cache(maxsize=None)
def gauss_legendre(points):
    """Nodes and weights of the `points`-point Gauss-Legendre rule on [-1, 1] (Golub & Welsch 1969)."""
    k = torch.arange(1, points, dtype=torch.float64)
    beta = k / torch.sqrt(4 * k**2 - 1)
    nodes, vectors = torch.linalg.eigh(torch.diag(beta, 1) + torch.diag(beta, -1))
    return tuple(nodes.tolist()), tuple((2 * vectors[0] ** 2).tolist())


def lagrange_integrals(nodes, a, b, warp=None, points=8):
    """w_j = integral_a^b L_j(warp(s)) ds, L_j(t) = prod_{k != j} (t - t_k) / (t_j - t_k) the Lagrange basis on `nodes`."""
    xs, ws = gauss_legendre(points)
    half, mid = (b - a) / 2, (b + a) / 2
    weights = [0.0] * len(nodes)
    for xi, wi in zip(xs, ws):
        t = mid + half * xi
        t = warp(t) if warp is not None else t
        for j, t_j in enumerate(nodes):
            basis = math.prod((t - t_k) / (t_j - t_k) for k, t_k in enumerate(nodes) if k != j)
            weights[j] += half * wi * basis
    return weights


def vp_time(sigma_min=0.002, sigma_max=80.0, eps_s=1e-3):
    """sigma -> t of the VP-SDE with linear beta(t) (Song et al. 2021) whose t = 1 and t = eps_s give sigma_max and
    sigma_min (EDM's VP settings, which DEIS as ComfyUI runs it assumes): log(1 + sigma^2) = beta_d t^2 / 2 + beta_min t."""
    log_max, log_min = math.log1p(sigma_max**2), math.log1p(sigma_min**2)
    beta_d = 2 * (log_min / eps_s - log_max) / (eps_s - 1)
    beta_min = log_max - beta_d / 2
    return lambda sigma: (math.sqrt(beta_min**2 + 2 * beta_d * math.log1p(sigma * sigma)) - beta_min) / beta_d


def _multistep(model, x, sigmas, extra_args, callback, max_order, weights):
    """Shared loop: x_next = x + sum_j w_j d_{i-j} with w = weights(i, order); the step to sigma = 0 returns D."""
    extra_args, _ = split_extra_args(extra_args)
    s_in = x.new_ones([x.shape[0]])
    history = []  # newest first
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        history = [to_d(x, sigma, denoised)] + history[: max_order - 1]
        report(callback, i, x, sigma, sigma, denoised)
        if sigma_next == 0:
            x = denoised  # the Euler step to sigma = 0 lands on D; no extrapolation into sigma <= 0
            continue
        w = weights(i, len(history))
        x = x + sum(w_j * d_j for w_j, d_j in zip(w, history))
    return x


def _sigma_list(sigmas):
    return [float(s) for s in sigmas.detach().to("cpu", torch.float64)]


@torch.no_grad()
def lms(model, x, sigmas, extra_args=None, callback=None, disable=None, order=4):
    """Linear multistep: variable-step Adams-Bashforth of the given order in sigma, lower orders to start."""
    s = _sigma_list(sigmas)
    return _multistep(model, x, sigmas, extra_args, callback, order,
                      lambda i, n: lagrange_integrals([s[i - k] for k in range(n)], s[i], s[i + 1]))


@torch.no_grad()
def ipndm(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=4):
    """Improved PNDM (Zhang & Chen 2023): fixed-step Adams-Bashforth weights times the actual step, lower orders to start."""
    s = _sigma_list(sigmas)
    fixed = [lagrange_integrals([-k for k in range(n)], 0.0, 1.0) for n in range(1, max_order + 1)]
    return _multistep(model, x, sigmas, extra_args, callback, max_order,
                      lambda i, n: [(s[i + 1] - s[i]) * b for b in fixed[n - 1]])


@torch.no_grad()
def ipndm_v(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=4):
    """iPNDM with variable steps (Zhang & Chen 2023): the exact variable-step Adams-Bashforth weights in sigma.

    ComfyUI's ipndm_v has other weights for orders 3 and 4 (a misplaced parenthesis in its second-difference
    term; its fourth order is (57, -65, 43, -11) / 24 even on even steps): the same results only for
    max_order <= 2, or max_order 3 on evenly spaced sigmas."""
    s = _sigma_list(sigmas)
    return _multistep(model, x, sigmas, extra_args, callback, max_order,
                      lambda i, n: lagrange_integrals([s[i - k] for k in range(n)], s[i], s[i + 1]))


@torch.no_grad()
def deis(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=3, deis_mode="tab"):
    """DEIS (Zhang & Chen 2023) tAB-DEIS: eps extrapolated by a polynomial in VP time t, integrated exactly over sigma."""
    s = _sigma_list(sigmas)
    if deis_mode == "tab":
        t_of = vp_time()
        t = [t_of(v) for v in s]
        return _multistep(model, x, sigmas, extra_args, callback, max_order,
                          lambda i, n: lagrange_integrals([t[i - k] for k in range(n)], s[i], s[i + 1], t_of, 16))
    if deis_mode == "rhoab":
        return _multistep(model, x, sigmas, extra_args, callback, max_order,
                          lambda i, n: lagrange_integrals([s[i - k] for k in range(n)], s[i], s[i + 1]))
    raise ValueError(f"deis_mode must be 'tab' or 'rhoab', not {deis_mode!r}")


SPECS = {
    "lms": SamplerSpec(
        fn=lms, calls_per_step=1, order=4, stochastic=False,
        summary="Linear multistep (Adams-Bashforth, order 4 by default): reuses the "
                "last few slopes, one model call per step."),
    "ipndm": SamplerSpec(
        fn=ipndm, calls_per_step=1, order=2, stochastic=False,
        summary="Improved PNDM: fixed-step Adams-Bashforth weights up to order 4; "
                "exact order 4 on evenly spaced sigmas, order 2 on uneven ones."),
    "ipndm_v": SamplerSpec(
        fn=ipndm_v, calls_per_step=1, order=4, stochastic=False,
        summary="iPNDM for uneven steps: exact variable-step Adams-Bashforth up "
                "to order 4 (the same method as lms)."),
    "deis": SamplerSpec(
        fn=deis, calls_per_step=1, order=3, stochastic=False,
        summary="DEIS (diffusion exponential integrator): extrapolates the predicted "
                "noise in VP time and integrates it exactly; order 3 by default."),
}
