"""Sampling schedules: the descending noise levels a sampler steps through, one function per published idea.

Three kinds, by what they read: a noise range (sigma_min, sigma_max), a model's noise table (a ModelSchedule or
FlowSchedule: .sigmas, .sigma(t), .timestep(sigma)), or nothing (published fixed levels). Each function takes the
number of steps first and returns float64 noise levels, highest first, usually ending in 0.
"""

import math
import numbers

import numpy
import torch

from .arithmetic import loglinear_interpolate
from .incomplete_beta import inverse_regularized_incomplete_beta
from .tables import AYS_NOISE_LEVELS, GITS_NOISE_LEVELS
from .validation import check_choice, check_number, check_positive, check_steps

LAPLACE_EPSILON = 1e-5  # keeps the Laplace quantile finite at probabilities 0 and 1 (both are clamped anyway)
SD_TURBO_TIMESTEPS = tuple(range(999, 0, -100))  # 999, 899, ..., 99: the grid SD-Turbo is sampled on
GITS_MAX_TABLE_STEPS = 20
SPACINGS = ("leading", "trailing", "linspace")


def append_zero(sigmas):
    """The schedule with a final noise level of 0: the last step lands on the clean sample."""
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def _ramp(steps):
    """`steps` points from 0 to 1 inclusive (just 0 for a single step)."""
    return torch.linspace(0, 1, steps, dtype=torch.float64)


# Schedules over a noise range --------------------------------------------------------------------------------


def karras(steps, sigma_min, sigma_max, rho=7.0):
    """Karras et al. 2022, eq. 5: sigma_i = (max^(1/rho) + i/(N-1) (min^(1/rho) - max^(1/rho)))^rho."""
    rho = check_positive(rho, "rho")
    high, low = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return append_zero((high + _ramp(steps) * (low - high)) ** rho)


def exponential(steps, sigma_min, sigma_max):
    """Evenly spaced in log sigma from sigma_max to sigma_min (k-diffusion)."""
    log_sigmas = math.log(sigma_max) + _ramp(steps) * (math.log(sigma_min) - math.log(sigma_max))
    return append_zero(log_sigmas.exp())


def polyexponential(steps, sigma_min, sigma_max, rho=1.0):
    """log sigma = log sigma_min + (1 - i/(N-1))^rho log(sigma_max/sigma_min); rho = 1 is exponential (k-diffusion)."""
    rho = check_positive(rho, "rho")
    ramp = (1 - _ramp(steps)) ** rho
    return append_zero((math.log(sigma_min) + ramp * (math.log(sigma_max) - math.log(sigma_min))).exp())


def kl_optimal(steps, sigma_min, sigma_max):
    """Sabour et al. 2024 (Align Your Steps), theorem 3.1: evenly spaced in arctan(sigma)."""
    ramp = _ramp(steps)
    return append_zero(torch.tan((1 - ramp) * math.atan(sigma_max) + ramp * math.atan(sigma_min)))


def laplace(steps, sigma_min, sigma_max, mu=0.0, beta=0.5):
    """Hang et al. 2024: log sigma at evenly spaced Laplace(mu, beta) quantiles, highest first, clamped to the range."""
    mu = check_number(mu, "mu")
    beta = check_positive(beta, "beta")
    offset = 0.5 - _ramp(steps)  # 1/2 - p for p = i/(N-1): quantiles of probability 1 - p, from the top down
    log_sigmas = mu - beta * offset.sign() * torch.log(1 - 2 * offset.abs() + LAPLACE_EPSILON)
    return append_zero(log_sigmas.exp().clamp(sigma_min, sigma_max))


def linear_quadratic(steps, sigma_max, threshold_noise=0.025, linear_steps=None):
    """Genmo's Mochi schedule: noise removed linearly to threshold_noise in linear_steps, then by a C1 quadratic."""
    threshold = check_number(threshold_noise, "threshold_noise")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold_noise must be between 0 and 1 (exclusive), got {threshold}")
    if steps == 1:
        return torch.tensor([sigma_max, 0.0], dtype=torch.float64)
    linear = steps // 2 if linear_steps is None else linear_steps
    if isinstance(linear, bool) or not isinstance(linear, numbers.Integral) or not 1 <= linear < steps:
        raise ValueError(f"linear_steps must be a whole number from 1 to steps - 1 ({steps - 1}), got {linear_steps!r}")
    quadratic = steps - linear
    i = torch.arange(steps, dtype=torch.float64)
    # removed noise: threshold * i / linear, continued by the quadratic with the same value and slope at i = linear
    # that reaches 1 at i = steps
    curvature = (1 - threshold - threshold * quadratic / linear) / quadratic**2
    after = (i - linear).clamp(min=0)
    removed = threshold * i / linear + curvature * after**2
    return append_zero(sigma_max * (1 - removed))


# Schedules with fixed noise levels ------------------------------------------------------------------------------


def vp(steps, beta_d=19.9, beta_min=0.1, eps_s=1e-3):
    """Song et al. 2021, VP SDE: sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), t evenly from 1 to eps_s."""
    beta_d = check_positive(beta_d, "beta_d")
    beta_min = check_number(beta_min, "beta_min")
    if beta_min < 0:
        raise ValueError(f"beta_min must not be negative, got {beta_min}")
    eps_s = check_number(eps_s, "eps_s")
    if not 0 < eps_s < 1:
        raise ValueError(f"eps_s must be between 0 and 1 (exclusive), got {eps_s}")
    t = 1 + _ramp(steps) * (eps_s - 1)
    return append_zero(torch.special.expm1(beta_d * t**2 / 2 + beta_min * t).sqrt())


def align_your_steps(steps, model_type):
    """Sabour et al. 2024: the published 10-step levels of a model type, log-linearly interpolated to other counts."""
    return _from_published_levels(AYS_NOISE_LEVELS[model_type], steps)


def gits(steps, coeff=1.2):
    """Chen et al. 2024 (GITS): published SD1.5 levels for 2..20 steps; other counts interpolate the 20-step row."""
    coeff = check_number(coeff, "coeff")
    key = round(coeff, 2)
    if key not in GITS_NOISE_LEVELS:
        valid = ", ".join(f"{c:.2f}" for c in GITS_NOISE_LEVELS)
        raise ValueError(f"coeff must be one of {valid}; got {coeff}")
    rows = GITS_NOISE_LEVELS[key]
    levels = rows[steps - 2] if 2 <= steps <= GITS_MAX_TABLE_STEPS else rows[-1]
    return _from_published_levels(levels, steps)


def _from_published_levels(levels, steps):
    """steps + 1 levels from a published table (interpolated if its length differs); the last, sigma_min, becomes 0."""
    sigmas = torch.tensor(levels, dtype=torch.float64)
    if len(sigmas) != steps + 1:
        sigmas = loglinear_interpolate(sigmas, steps + 1).double()
    sigmas[-1] = 0
    return sigmas


# Schedules on a model's noise table -----------------------------------------------------------------------------


def simple(steps, model):
    """Every (T / steps)-th entry of the model's T-entry table, from the noisiest down (ComfyUI's simple)."""
    table = model.sigmas
    stride = len(table) / steps  # a float, truncated per pick: for 38 steps pick 19 is int(499.99...) = 499, not 500
    picks = [float(table[len(table) - 1 - int(i * stride)]) for i in range(steps)]
    return append_zero(torch.tensor(picks, dtype=torch.float64))


def normal(steps, model):
    """Evenly spaced in the model's timestep, from timestep(sigma_max) to timestep(sigma_min) (k-diffusion)."""
    return append_zero(model.sigma(_timestep_ramp(model, steps)))


def sgm_uniform(steps, model):
    """As normal with steps + 1 timesteps, dropping the last, so sigma_min is not visited (Stability AI's sgm)."""
    return append_zero(model.sigma(_timestep_ramp(model, steps + 1)[:-1]))


def _timestep_ramp(model, count):
    """`count` timesteps evenly from the model's noisiest to its least noisy, as float64."""
    start = float(model.timestep(torch.tensor(float(model.sigma_max), dtype=torch.float64)))
    end = float(model.timestep(torch.tensor(float(model.sigma_min), dtype=torch.float64)))
    return torch.linspace(start, end, count, dtype=torch.float64)


def ddim_uniform(steps, model):
    """Song et al. 2021 (DDIM) as latent diffusion discretises it: every (T // steps)-th timestep from 1, which can
    give a few more steps than asked (e.g. 8 for 7) because T // steps rounds down."""
    table = model.sigmas
    stride = max(len(table) // steps, 1)
    picks = [float(table[t]) for t in range(1, len(table), stride)]
    return append_zero(torch.tensor(picks[::-1], dtype=torch.float64))


def beta_sampling(steps, model, alpha=0.6, beta=0.6):
    """Lee et al. 2024: timesteps at quantiles of a Beta(alpha, beta) (dense at both ends), rounded to the table;
    repeats are dropped, so a schedule can have fewer steps than asked."""
    alpha, beta = check_positive(alpha, "alpha"), check_positive(beta, "beta")
    table = model.sigmas
    last_index = len(table) - 1
    probabilities = 1 - numpy.linspace(0, 1, steps, endpoint=False)
    # The quantiles are good to ~1e-15; rounding them to 1e-9 of a timestep first lets an exact tie (a quantile of
    # exactly 0.5 on a 1000-entry table is timestep 499.5) round half to even as exact arithmetic would.
    positions = [round(inverse_regularized_incomplete_beta(p, alpha, beta) * last_index, 9) for p in probabilities]
    indices = [round(position) for position in positions]
    picks = [float(table[t]) for k, t in enumerate(indices) if k == 0 or t != indices[k - 1]]
    return append_zero(torch.tensor(picks, dtype=torch.float64))


def sd_turbo(steps, model):
    """Sauer et al. 2023 (adversarial diffusion distillation) as SD-Turbo is sampled: timesteps 999, 899, ..., <= 10."""
    if steps > len(SD_TURBO_TIMESTEPS):
        raise ValueError(
            f"sd_turbo has at most {len(SD_TURBO_TIMESTEPS)} steps, got steps (divided by denoise) = {steps}"
        )
    timesteps = torch.tensor(SD_TURBO_TIMESTEPS[:steps], dtype=torch.float64)
    return append_zero(model.sigma(timesteps).double())


def spaced_timesteps(spacing, steps, train_timesteps=1000, steps_offset=1):
    """diffusers' timestep spacings (Lin et al. 2024, tab. 2) as float64, noisiest first; steps_offset shifts leading.

    leading: 0, T//N, 2 T//N, ... plus steps_offset; trailing: round(T - i T/N) - 1; linspace: N points from 0 to T-1.
    """
    check_choice(spacing, SPACINGS, "timestep spacing")
    steps = check_steps(steps)
    if steps > train_timesteps:
        raise ValueError(f"steps ({steps}) cannot exceed the model's {train_timesteps} training timesteps")
    if spacing == "leading":
        if isinstance(steps_offset, bool) or not isinstance(steps_offset, numbers.Integral) or steps_offset < 0:
            raise ValueError(f"steps_offset must be a whole number, at least 0, got {steps_offset!r}")
        timesteps = numpy.arange(steps - 1, -1, -1, dtype=numpy.float64) * (train_timesteps // steps) + steps_offset
        if timesteps[0] > train_timesteps - 1:
            raise ValueError(f"steps_offset ({steps_offset}) moves the first timestep past {train_timesteps - 1}")
    elif spacing == "trailing":
        # laid out by numpy.arange as diffusers does, which settles the half-integer ties (937.5 -> 937 or 938) its
        # way; for some counts (61, 103, ...) arange adds a spurious last point near 0, which is left off
        timesteps = numpy.round(numpy.arange(train_timesteps, 0, -train_timesteps / steps)[:steps]) - 1
    else:
        timesteps = numpy.linspace(0, train_timesteps - 1, steps)[::-1]
    return torch.from_numpy(timesteps.copy())


def diffusers_spacing(steps, model, spacing, steps_offset=1):
    """Sigmas at diffusers' spaced timesteps, interpolated linearly in sigma between table entries as diffusers'
    EulerDiscreteScheduler does (interpolation_type="linear"), then 0."""
    table = model.sigmas.double().numpy()
    timesteps = spaced_timesteps(spacing, steps, len(table), steps_offset).numpy()
    sigmas = numpy.interp(timesteps, numpy.arange(len(table)), table)
    return append_zero(torch.from_numpy(sigmas))
