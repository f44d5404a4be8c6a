"""ER-SDE-Solver (Cui et al. 2025, "Elucidating the solution space of extended reverse-time SDE for diffusion
models", arXiv:2309.06169): the extended reverse-time SDE family, solved in data prediction.

For the EDM / variance-exploding form (x = x0 + sigma * eps) the paper's lambda = sigma / alpha is sigma
itself. A noise scaler phi(lambda) picks one member of the family: the step s -> t is exactly

    x_t = r x_s + phi_t int_{sigma_t}^{sigma_s} phi'(l) / phi(l)^2 x0(l) dl + sqrt(sigma_t^2 - r^2 sigma_s^2) z,

with r = phi(sigma_t) / phi(sigma_s). Expanding x0 in a Taylor series around sigma_s and integrating by parts
gives the stage terms: r x_s + (1 - r) x0 + [dt + phi_t S_1] x0' + [dt^2 / 2 + phi_t S_2] x0'',
dt = sigma_t - sigma_s, S_1 = int dl / phi(l), S_2 = int (l - sigma_s) / phi(l) dl, both over [sigma_t, sigma_s]
and evaluated, like the reference code, by a left Riemann sum; x0' and x0'' are divided differences of
the last model outputs. phi(l) = l gives the probability-flow ODE (no noise); phi(l) = l^2 the reverse-time SDE.

Order: x0' is a backward difference, only first-order accurate at sigma_s, and its O(dt) error times the
O(dt^2) stage-2 weight is a local O(dt^3) error, so the solver is second order whatever max_stage (measured:
slope 1.9 on the ODE member); stage 3 only lowers the error constant.

For a rectified-flow model (noise_model="flow": x = alpha x0 + sigma eps, alpha = 1 - sigma) the paper's general
form applies: lambda = sigma / alpha, and the step carries alpha_t / alpha_s on x and alpha_t on D and on the noise;
a first sigma of 1 (lambda infinite) is moved just below 1.
"""
import torch

from .common import SamplerSpec, prepare, report
from .noise_model import noise_model_of


def er_sde_noise_scaler(lam):
    """The paper's ER-SDE noise scaler phi(lambda) = lambda (e^{lambda^0.3} + 10)."""
    return lam * ((lam**0.3).exp() + 10.0)


def _stage_integrals(phi, sigma, sigma_next, points):
    """S_1 = int dl / phi(l) and S_2 = int (l - sigma) / phi(l) dl over [sigma_next, sigma] (left Riemann sum)."""
    width = (sigma - sigma_next) / points
    lam = sigma_next + torch.arange(points, dtype=torch.float64) * width
    inverse = 1 / phi(lam)
    return float(inverse.sum() * width), float(((lam - sigma) * inverse).sum() * width)


@torch.no_grad()
def er_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1.0, noise_sampler=None,
           noise_scaler=None, max_stage=3, integration_points=200, noise_model="ve"):
    """ER-SDE-Solver-3: multistep Taylor stages 1..max_stage of the extended reverse-time SDE (Cui et al. 2025)."""
    extra_args, noise_sampler, s_in = prepare(x, extra_args, noise_sampler)
    noise_model = noise_model_of(noise_model)
    sigmas = noise_model.log_snr_start(sigmas)
    phi = er_sde_noise_scaler if noise_scaler is None else noise_scaler

    def phi_of(value):
        return float(phi(torch.tensor(value, dtype=torch.float64)))

    history = []  # (lambda_m, D_m) of the last two steps, then x0' of the last step
    d_prev = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        lam, lam_next = noise_model.ratio(sigma), noise_model.ratio(sigma_next)  # the paper's lambda = sigma / alpha
        alpha, alpha_next = noise_model.alpha(sigma), noise_model.alpha(sigma_next)
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, i, x, sigmas[i], sigmas[i], denoised)
        stage = min(max_stage, i + 1)
        if sigma_next == 0:
            x = denoised
        else:
            phi_next = phi_of(lam_next)
            r = phi_next / phi_of(lam)
            dt = lam_next - lam
            x = (alpha_next / alpha) * r * x + alpha_next * (1 - r) * denoised  # stage 1
            if stage >= 2:
                s_1, s_2 = _stage_integrals(phi, lam, lam_next, integration_points)
                lam_prev, denoised_prev = history[-1]
                d = (denoised - denoised_prev) / (lam - lam_prev)  # x0'
                x = x + alpha_next * (dt + phi_next * s_1) * d
                if stage >= 3:
                    lam_prev_2 = history[-2][0]
                    d2 = (d - d_prev) / ((lam - lam_prev_2) / 2)  # x0''
                    x = x + alpha_next * (dt**2 / 2 + phi_next * s_2) * d2
                d_prev = d
            if s_noise > 0:
                noise_scale = max(lam_next**2 - r**2 * lam**2, 0.0) ** 0.5
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * (s_noise * alpha_next * noise_scale)
        history = (history + [(lam, denoised)])[-2:]
    return x


SPECS = {
    "er_sde": SamplerSpec(
        fn=er_sde, calls_per_step=1.0, order=2, stochastic=True,
        summary="ER-SDE-Solver-3: extended reverse-time SDE with the paper's noise scaler, three-stage "
                "multistep in sigma, one model call per step (noise_scaler=lambda l: l gives the ODE)."),
}
