"""DPM-Solver (Lu et al. 2022, arXiv:2206.00927): exponential integrators of the probability-flow ODE in
lambda = log(alpha / sigma), written for noise prediction eps = (x - D(x, sigma)) / sigma.

The denoiser is taken as an EDM / variance-exploding one (alpha = 1), so lambda = -log(sigma) and
sigma(lambda) = exp(-lambda); a VP model wrapped k-diffusion style (x scaled by sqrt(1 + sigma^2)
inside the denoiser) is the same ODE. Both samplers follow the paper's own time grid, so from the
given sigmas they use only the end points: sigmas[0] and the last nonzero sigma. Like ComfyUI's,
they stop at that last nonzero sigma (no final jump to sigma = 0).
"""
import math
import numbers

import torch

from .common import SamplerSpec, ancestral_step, prepare, report
from .exponential import h_phi, lambda_of, sigma_of

DEFAULT_MAX_CALLS = 500  # dpm_adaptive's bound on model calls: ~170 steps of order 3, far above its usual 20-60


def _end_points(sigmas):
    """The first sigma and the last nonzero one, both strictly positive."""
    sigma_start, sigma_end = sigmas[0], sigmas[-1]
    if sigma_end == 0:
        sigma_end = sigmas[-2]
    if sigma_start <= 0 or sigma_end <= 0:
        raise ValueError("DPM-Solver needs a first and a last nonzero sigma above 0")
    return sigma_start, sigma_end


def _eps_fn(model, x, extra_args):
    """eps_theta(x, lambda) = (x - D(x, sigma)) / sigma, and the denoised D alongside."""
    s_in = x.new_ones([x.shape[0]])

    def eps_fn(x, lam):
        sigma = sigma_of(lam)
        denoised = model(x, sigma * s_in, **extra_args)
        return (x - denoised) / sigma, denoised

    return eps_fn


def _dpm_solver_step(eps_fn, x, eps, lam, lam_next, order):
    """One DPM-Solver-k step, k = 1, 2 or 3 (Lu et al. 2022; Algorithms 1 and 2 for k = 2 and 3).

    Returns (x_next, x_lower): the order-k result and, for k >= 2, the embedded order-(k - 1) one
    that shares its model evaluations (DPM-Solver-12: r1 = 1/2; DPM-Solver-23: r1 = 1/3, r2 = 2/3).
    `eps` is eps_theta(x, lam), already evaluated.
    """
    h = lam_next - lam
    sigma_next = sigma_of(lam_next)
    x_1 = x - sigma_next * h_phi(1, h) * eps  # DPM-Solver-1 (DDIM)
    if order == 1:
        return x_1, None
    r1 = 1 / 2 if order == 2 else 1 / 3
    s1 = lam + r1 * h
    u1 = x - sigma_of(s1) * h_phi(1, r1 * h) * eps
    eps_1, _ = eps_fn(u1, s1)
    x_2 = x_1 - sigma_next / (2 * r1) * h_phi(1, h) * (eps_1 - eps)  # DPM-Solver-2
    if order == 2:
        return x_2, x_1
    r2 = 2 / 3
    s2 = lam + r2 * h
    u2 = (x - sigma_of(s2) * h_phi(1, r2 * h) * eps
          - sigma_of(s2) * (r2 / r1) * h_phi(2, r2 * h) * (eps_1 - eps))
    eps_2, _ = eps_fn(u2, s2)
    x_3 = x_1 - sigma_next / r2 * h_phi(2, h) * (eps_2 - eps)  # DPM-Solver-3
    return x_3, x_2


def _ancestral_target(lam, lam_next, lam_end, eta):
    """Where the deterministic part of a stochastic step lands, and how much noise restores sigma(lam_next)."""
    if not eta:
        return lam_next, 0.0
    sigma_down, _ = ancestral_step(sigma_of(lam), sigma_of(lam_next), eta)
    lam_down = torch.minimum(lam_end, lambda_of(sigma_down))  # eta > 0 only runs towards lower noise
    sigma_up = (sigma_of(lam_next) ** 2 - sigma_of(lam_down) ** 2) ** 0.5
    return lam_down, sigma_up


def fast_step_orders(nfe):
    """DPM-Solver-fast's step orders for a budget of `nfe` model calls (Lu et al. 2022, Sec. 3.4).

    The last step is DPM-Solver-1 unless nfe % 3 == 2, so the whole run is third order only then
    (second order otherwise).
    """
    steps = nfe // 3 + 1
    if nfe % 3 == 0:
        return [3] * (steps - 2) + [2, 1]
    return [3] * (steps - 1) + [nfe % 3]


@torch.no_grad()
def dpm_fast(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=0.0, s_noise=1.0,
             noise_sampler=None):
    """DPM-Solver-fast (Lu et al. 2022, Sec. 3.4): DPM-Solver-3 steps uniform in lambda, len(sigmas) - 1 model calls."""
    if len(sigmas) <= 1:
        return x
    extra_args, noise_sampler, _ = prepare(x, extra_args, noise_sampler)
    eps_fn = _eps_fn(model, x, extra_args)
    sigma_start, sigma_end = _end_points(sigmas)
    lam_start, lam_end = lambda_of(sigma_start), lambda_of(sigma_end)
    if eta and lam_end < lam_start:
        raise ValueError("eta must be 0 when sampling towards higher noise")

    orders = fast_step_orders(len(sigmas) - 1)
    lams = torch.linspace(float(lam_start), float(lam_end), len(orders) + 1, dtype=sigmas.dtype, device=sigmas.device)
    for i, order in enumerate(orders):
        lam, lam_next = lams[i], lams[i + 1]
        lam_down, sigma_up = _ancestral_target(lam, lam_next, lam_end, eta)
        eps, denoised = eps_fn(x, lam)
        report(callback, i, x, sigma_of(lam), sigma_of(lam), denoised)
        x, _ = _dpm_solver_step(eps_fn, x, eps, lam, lam_down, order)
        if eta:
            x = x + noise_sampler(sigma_of(lam), sigma_of(lam_next)) * s_noise * sigma_up
    return x


class PIDStepController:
    """Step-size control by a PID digital filter on the error history (Soderlind 2003), arctan-limited.

    With eps_n = 1 / error_n and k the order of the error estimate, the next step is
    h * limiter(eps_n^b1 * eps_{n-1}^b2 * eps_{n-2}^b3), b1 = (kP + kI + kD) / k, b2 = -(kP + 2 kD) / k,
    b3 = kD / k; the step is accepted when that factor is at least `accept_safety`.
    """

    def __init__(self, h, pcoeff, icoeff, dcoeff, order, accept_safety, eps=1e-8):
        self.h = h
        self.b = ((pcoeff + icoeff + dcoeff) / order, -(pcoeff + 2 * dcoeff) / order, dcoeff / order)
        self.accept_safety = accept_safety
        self.eps = eps
        self.history = None  # inverse errors of this try and of the last two accepted steps

    def propose(self, error):
        """Rescale h from this step's error; True if the step is accepted."""
        inv_error = 1 / (float(error) + self.eps)
        if self.history is None:
            self.history = [inv_error] * 3
        self.history[0] = inv_error
        factor = math.prod(e**b for e, b in zip(self.history, self.b))
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.history = [inv_error, inv_error, self.history[1]]
        self.h *= factor
        return accept


@torch.no_grad()
def dpm_adaptive(model, x, sigmas, extra_args=None, callback=None, disable=None, order=3, rtol=0.05, atol=0.0078,
                 h_init=0.05, pcoeff=0.0, icoeff=1.0, dcoeff=0.0, accept_safety=0.81, eta=0.0, s_noise=1.0,
                 noise_sampler=None, max_calls=DEFAULT_MAX_CALLS):
    """DPM-Solver-12 / -23 with adaptive step size (Lu et al. 2022, Sec. 3.4): the steps follow rtol / atol.

    At most `max_calls` model calls: a run that needs more stops with an error naming max_calls, rtol and atol (a
    half-denoised picture returned as if finished would be a silent wrong result). Progress is reported in the
    schedule's own steps (`i` from 0 to len(sigmas) - 2) as the share of the log-noise range covered or of max_calls
    used, whichever is larger, so a host's progress bar moves while the steps are many.
    """
    if len(sigmas) <= 1:
        return x
    if order not in (2, 3):
        raise ValueError("order must be 2 or 3")
    if isinstance(max_calls, bool) or not isinstance(max_calls, numbers.Integral) or max_calls < order:
        raise ValueError(f"max_calls: expected a whole number of at least {order} (one step of order {order} takes "
                         f"{order} model calls), got {max_calls!r}")
    extra_args, noise_sampler, _ = prepare(x, extra_args, noise_sampler)
    calls = 0

    def counted(x, sigma, **kwargs):
        nonlocal calls
        calls += 1
        return model(x, sigma, **kwargs)

    eps_fn = _eps_fn(counted, x, extra_args)
    sigma_start, sigma_end = _end_points(sigmas)
    lam, lam_end = lambda_of(sigma_start), lambda_of(sigma_end)
    lam_start, steps = float(lam), len(sigmas) - 1

    def progress_step():
        """The schedule step whose share of the run matches the progress made (never past the last)."""
        covered = (float(lam) - lam_start) / (float(lam_end) - lam_start)
        return min(steps - 1, int(max(covered, calls / max_calls) * steps))
    forward = lam_end > lam
    if eta and not forward:
        raise ValueError("eta must be 0 when sampling towards higher noise")

    # The error estimate x_high - x_low is of order `order` (or about 1.5 with noise, as k-diffusion uses).
    pid = PIDStepController(abs(h_init) * (1 if forward else -1), pcoeff, icoeff, dcoeff, 1.5 if eta else order,
                            accept_safety)
    x_prev = x
    eps = None
    while lam < lam_end - 1e-5 if forward else lam > lam_end + 1e-5:
        if calls + (order - 1) + (eps is None) > max_calls:
            raise ValueError(f"max_calls: dpm_adaptive used {calls} of its {max_calls} model calls and reached sigma "
                             f"{float(sigma_of(lam)):.4g}, not yet the last sigma {float(sigma_end):.4g}: rtol "
                             f"{rtol:g} and atol {atol:g} ask for more steps than that; raise max_calls or loosen "
                             f"rtol / atol")
        lam_next = torch.minimum(lam_end, lam + pid.h) if forward else torch.maximum(lam_end, lam + pid.h)
        lam_down, sigma_up = _ancestral_target(lam, lam_next, lam_end, eta)
        if eps is None:  # a rejected step retries from the same (x, lambda): reuse its evaluation
            eps, denoised = eps_fn(x, lam)
            report(callback, progress_step(), x, sigma_of(lam), sigma_of(lam), denoised)
        x_high, x_low = _dpm_solver_step(eps_fn, x, eps, lam, lam_down, order)
        delta = torch.clamp(rtol * torch.maximum(x_low.abs(), x_prev.abs()), min=atol)
        error = torch.linalg.vector_norm((x_high - x_low) / delta) / x.numel() ** 0.5
        if pid.propose(error):
            x_prev = x_low
            x = x_high
            if eta:
                x = x + noise_sampler(sigma_of(lam), sigma_of(lam_next)) * s_noise * sigma_up
            lam, eps = lam_next, None
    return x


SPECS = {
    "dpm_fast": SamplerSpec(
        fn=dpm_fast, calls_per_step=1.0, order=3, stochastic=False,
        summary="DPM-Solver-fast: third-order steps uniform in log-SNR, one model call per sigma step; "
                "uses only the first and last nonzero sigma (eta > 0 adds noise)."),
    "dpm_adaptive": SamplerSpec(
        fn=dpm_adaptive, calls_per_step=3.0, order=3, stochastic=False,
        summary="DPM-Solver-23 with adaptive step size: picks its own steps from rtol/atol between the first "
                "and last nonzero sigma; model calls vary (about 3 per accepted step), at most max_calls."),
}
