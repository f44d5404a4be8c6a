"""Restart sampling (Xu et al. 2023, "Restart Sampling for Improving Generative Processes", Algorithm 1).

The main process is Heun's method on the probability-flow ODE (Karras et al. 2022). Each restart segment
(N, K, t_min, t_max) acts when the main process reaches the noise level nearest t_min: K times over, it
jumps forward to t_max by adding fresh noise of variance t_max^2 - t_min^2 and solves the ODE back down to
t_min with N - 1 Heun steps on a Karras (rho = 7) discretisation of [t_min, t_max]. The noise contracts the
errors accumulated so far; the ODE keeps the discretisation error small. With no segments this is Heun.

On a rectified-flow model (noise_model="flow": x = alpha x0 + sigma eps, alpha = 1 - sigma) the ODE is the same (see
noise_model.py); the jump up is the forward process from t_min to t_max, (alpha_max / alpha_min) x plus fresh noise,
and t_max must stay below 1. The default segment keeps the paper's noise-to-signal ratios sigma / alpha in [0.1, 2]:
sigma in [0.1 / 1.1, 2 / 3] on a flow model.
"""
import torch

from ..schedules.sampling import karras
from .common import SamplerSpec, prepare, report, to_d
from .euler import heun_step
from .noise_model import noise_model_of

# The paper's Stable Diffusion setting (its official pipeline for guidance 5-8): N = 10, K = 2, [0.1, 2].
DEFAULT_RESTARTS = ((10, 2, 0.1, 2.0),)


def restart_plan(sigmas, restart_list):
    """Map each segment (N, K, t_min, t_max) to the index of the schedule's positive sigma nearest t_min."""
    plan = {}
    positive = [j for j in range(1, len(sigmas)) if sigmas[j] > 0]
    for n, k, t_min, t_max in restart_list:
        if not positive or int(n) < 2 or int(k) < 1:
            continue
        j = min(positive, key=lambda j: abs(float(sigmas[j]) - float(t_min)))
        if float(t_max) > float(sigmas[j]):
            plan.setdefault(j, []).append((int(n), int(k), float(t_max)))
    return plan


@torch.no_grad()
def restart(model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1.0,
            restart_list=None, noise_sampler=None, noise_model="ve"):
    """Restart sampling (Xu et al. 2023, Algorithm 1): Heun's ODE steps, with K noise-up-to-t_max restarts at each t_min."""
    # restart_list: segments (N, K, t_min, t_max); None for DEFAULT_RESTARTS, () for none (plain Heun).
    # The callback's "i" counts every Heun step, restart steps included: N - 1 more per restart.
    extra_args, noise_sampler, s_in = prepare(x, extra_args, noise_sampler)
    noise_model = noise_model_of(noise_model)
    if restart_list is None:
        restart_list = [(n, k, noise_model.from_ratio(t_min), noise_model.from_ratio(t_max))
                        for n, k, t_min, t_max in DEFAULT_RESTARTS]
    elif noise_model.flow and any(float(t_max) >= 1 for *_, t_max in restart_list):
        raise ValueError(f"restart_list: on a rectified-flow model every t_max must be below 1 (sigma = 1 is pure "
                         f"noise), got {list(restart_list)}")
    plan = restart_plan(sigmas, restart_list)
    step = 0

    def ode_step(x, sigma, sigma_next):
        nonlocal step
        denoised = model(x, sigma * s_in, **extra_args)
        report(callback, step, x, sigma, sigma, denoised)
        step += 1
        return heun_step(model, x, sigma, sigma_next, to_d(x, sigma, denoised), s_in, extra_args)

    for i in range(len(sigmas) - 1):
        x = ode_step(x, sigmas[i], sigmas[i + 1])
        for n, k, t_max in plan.get(i + 1, ()):
            t_min = sigmas[i + 1]
            levels = karras(n, float(t_min), t_max)[:-1].to(sigmas)  # without the final 0
            levels[-1] = t_min  # land exactly back on the main schedule
            for _ in range(k):
                x = noise_model.raise_noise(x, t_min, levels[0], noise_sampler(levels[0], t_min) * s_noise)
                for sigma, sigma_next in zip(levels[:-1], levels[1:]):
                    x = ode_step(x, sigma, sigma_next)
    return x


SPECS = {
    "restart": SamplerSpec(
        fn=restart, calls_per_step=2, order=2, stochastic=True,
        summary="Restart sampling (Xu et al. 2023): Heun's ODE steps, and at a low noise level jump back up with "
                "fresh noise and re-solve; extra steps."),
}
