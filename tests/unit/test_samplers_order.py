"""Every sampler's order of accuracy, measured: the slope of its error against the exact solution on a Gaussian
mixture, checked against the order its SamplerSpec claims. A sampler in the registry without a measurement fails.

SamplerSpec.order is the order of the deterministic method in its full-order configuration: stochastic samplers run
with their noise off, and end effects that a default may add (UniPC's lower-order last steps, DPM-Solver-fast's
first-order last step) are left out here and measured separately in OPTION_CASES."""
import math
from dataclasses import dataclass, field

import pytest
import torch

from diffusion_blocks.devtools.gmm import GaussianMixture, reference_solution
from diffusion_blocks.samplers import SAMPLER_SPECS

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see tests/conftest.py

SIGMA_MIN = 0.1
TOLERANCE = 0.45  # |fitted slope - order|: half an order apart tells neighbouring orders apart


def zero_noise(sigma, sigma_next):
    """A noise sampler that adds nothing: the stochastic samplers' deterministic part."""
    return 0.0


@dataclass(frozen=True)
class Measurement:
    """How to run a sampler so that its error converges at its order, over which step counts."""

    steps: tuple  # step counts in the asymptotic regime
    options: dict = field(default_factory=dict)
    sigma_max: float = 10.0  # 80 keeps a multistep method's low-order start steps below its own error
    reference: str = "ode"  # "ode": the probability-flow ODE; "sde_mean": the reverse SDE's drift alone


ODE_NOISE_OFF = {"eta": 0.0}
MEASUREMENTS = {
    "euler": Measurement((16, 32, 64), sigma_max=80.0),
    "euler_ancestral": Measurement((16, 32, 64), ODE_NOISE_OFF, sigma_max=80.0),
    "ddim": Measurement((16, 32, 64), sigma_max=80.0),
    # its weights sigma / (3 sigma_0) fade to Euler as the noise falls: first order
    "heunpp2": Measurement((16, 32, 64), sigma_max=80.0),
    "heun": Measurement((8, 16, 32), sigma_max=80.0),
    "dpm_2": Measurement((8, 16, 32), sigma_max=80.0),
    "dpm_2_ancestral": Measurement((8, 16, 32), ODE_NOISE_OFF, sigma_max=80.0),
    # restart's segments re-noise on purpose (with the noise zeroed they would jump up without it); without
    # segments its main process is Heun's
    "restart": Measurement((8, 16, 32), {"restart_list": ()}, sigma_max=80.0),
    "lms": Measurement((64, 128, 256), sigma_max=80.0),
    "ipndm_v": Measurement((64, 128, 256), sigma_max=80.0),
    # fixed-step Adams-Bashforth weights on uneven steps: second order, not fourth
    "ipndm": Measurement((32, 64, 128), sigma_max=80.0),
    "deis": Measurement((64, 128, 256), sigma_max=80.0),
    # DDPM with its noise zeroed keeps the posterior mean D + (sigma_next / sigma)^2 (x - D): a first-order step of
    # the reverse SDE's drift dx/dsigma = 2 (x - D) / sigma (the probability-flow ODE of the denoiser 2 D - x),
    # not of the probability-flow ODE, so that is what it converges to. (DDPM itself: weak order 1.)
    "ddpm": Measurement((16, 32, 64), {"noise_sampler": zero_noise}, sigma_max=80.0, reference="sde_mean"),
    # LCM integrates nothing: with the noise zeroed each step jumps to D(x, sigma) and the result stays O(1) away
    # from the ODE solution however many steps it takes (order 0); its accuracy is the consistency model's own.
    "lcm": Measurement((8, 16, 32), {"noise_sampler": zero_noise}, sigma_max=80.0),
    # n % 3 == 2 model calls: every step DPM-Solver-3 but a final DPM-Solver-2
    "dpm_fast": Measurement((23, 47, 95)),
    # the step-size controller off (icoeff = 0 keeps h = h_init, every step accepted): N equal DPM-Solver-3 steps
    "dpm_adaptive": Measurement((16, 32, 64), {"icoeff": 0.0, "h_init": "uniform"}),
    "dpmpp_2m": Measurement((32, 64, 128)),
    "dpmpp_2s_ancestral": Measurement((32, 64, 128), ODE_NOISE_OFF),
    "dpmpp_sde": Measurement((32, 64, 128), ODE_NOISE_OFF),
    "dpmpp_2m_sde": Measurement((32, 64, 128), ODE_NOISE_OFF),
    # k-diffusion's 3M: first-order start step and D'' at half its Taylor weight, second order in the limit
    "dpmpp_3m_sde": Measurement((64, 128, 256), ODE_NOISE_OFF),
    # UniP-3 predictor + UniC-3 corrector: order p + 1 = 4 (Zhao et al. 2023, Theorem 3.1). Below ~48 steps the
    # error terms cancel on this problem (a dip in the error), so the fit starts above it.
    "uni_pc": Measurement((64, 128, 256), {"lower_order_final": False}),
    "uni_pc_bh2": Measurement((64, 128, 256), {"lower_order_final": False}),
    # Adams predictor of order 3, corrector of order 4: order 4 (Xue et al. 2023); the same dip as UniPC
    "sa_solver": Measurement((64, 128, 256), ODE_NOISE_OFF),
    "sa_solver_pece": Measurement((64, 128, 256), ODE_NOISE_OFF),
    "res_multistep": Measurement((16, 32, 64)),
    "res_multistep_ancestral": Measurement((16, 32, 64), ODE_NOISE_OFF),
    # phi(l) = l is the ODE member of the family; stage 3 does not lift the order (see er_sde.py)
    "er_sde": Measurement((16, 32, 64), {"noise_scaler": lambda lam: lam}),
    "seeds_2": Measurement((32, 64, 128), ODE_NOISE_OFF),
    "seeds_3": Measurement((16, 32, 64), ODE_NOISE_OFF),
}

# Options that change the order, each measured against the order the maths gives for it.
OPTION_CASES = [
    # name, measurement, expected order
    ("lms", Measurement((32, 64, 128), {"order": 2}, sigma_max=80.0), 2),
    ("lms", Measurement((64, 128, 256), {"order": 3}, sigma_max=80.0), 3),
    ("deis", Measurement((32, 64, 128), {"max_order": 2}, sigma_max=80.0), 2),
    ("deis", Measurement((32, 64, 128), {"max_order": 4}, sigma_max=80.0), 4),
    ("dpmpp_sde", Measurement((32, 64, 128), {"eta": 0.0, "r": 1 / 3}), 2),
    ("dpmpp_2m_sde", Measurement((32, 64, 128), {"eta": 0.0, "solver_type": "heun"}), 2),
    # otherwise DPM-Solver-fast's last step is DPM-Solver-1 (Lu et al. 2022, Sec. 3.4): second order
    ("dpm_fast", Measurement((24, 48, 96)), 2),
    # ComfyUI's default drops to order 1 on the last steps (local error h^2): globally second order
    ("uni_pc", Measurement((32, 64, 128)), 2),
    # predictor 2 + corrector 3: order 3
    ("sa_solver", Measurement((32, 64, 128), {"eta": 0.0, "predictor_order": 2, "corrector_order": 3}), 3),
]


@pytest.fixture(scope="module")
def problems():
    """sigma_max -> (mixture, start points, exact solutions at SIGMA_MIN), built on first use."""
    cache = {}

    def problem(sigma_max, reference):
        if (sigma_max, reference) not in cache:
            model = GaussianMixture(dim=4)
            x = model.sample_prior(4, sigma_max, seed=1)
            drift = model if reference == "ode" else (lambda x, sigma: 2 * model(x, sigma) - x)
            exact = reference_solution(drift, x.clone(), sigma_max, SIGMA_MIN, steps=1000)  # RK4: error < 1e-9
            cache[sigma_max, reference] = model, x, exact
        return cache[sigma_max, reference]

    return problem


def log_uniform(steps, sigma_max):
    """Noise levels evenly spaced in log sigma from sigma_max to SIGMA_MIN (no final step to 0)."""
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(SIGMA_MIN), steps + 1, dtype=torch.float64))


def fitted_order(problems, name, measurement):
    """Least-squares slope of -log(error) against log(steps), and the errors."""
    model, x, exact = problems(measurement.sigma_max, measurement.reference)
    errors = []
    for n in measurement.steps:
        options = dict(measurement.options)
        if options.get("h_init") == "uniform":
            options["h_init"] = math.log(measurement.sigma_max / SIGMA_MIN) / n
        out = SAMPLER_SPECS[name].fn(model, x.clone(), log_uniform(n, measurement.sigma_max), **options)
        errors.append(float((out - exact).norm() / exact.norm()))
    logs_n = torch.tensor([math.log(n) for n in measurement.steps], dtype=torch.float64)
    logs_e = torch.tensor([math.log(e) for e in errors], dtype=torch.float64)
    centred = logs_n - logs_n.mean()
    return float(-(centred * (logs_e - logs_e.mean())).sum() / (centred**2).sum()), errors


@pytest.mark.parametrize("name", sorted(SAMPLER_SPECS))
def test_every_samplers_order_is_measured(problems, name):
    assert name in MEASUREMENTS, f"{name}: no order measurement; add how to run it to MEASUREMENTS"
    slope, errors = fitted_order(problems, name, MEASUREMENTS[name])
    order = SAMPLER_SPECS[name].order
    assert abs(slope - order) <= TOLERANCE, f"{name}: spec says order {order}, measured {slope:.2f} (errors {errors})"
    if order > 0:
        assert errors[-1] > 1e-9, f"{name}: errors {errors} reach the reference's own error"


@pytest.mark.parametrize("name,measurement,order", OPTION_CASES,
                         ids=[f"{c[0]}-{c[1].options}-{c[1].steps[0]}" for c in OPTION_CASES])
def test_options_that_change_the_order(problems, name, measurement, order):
    slope, errors = fitted_order(problems, name, measurement)
    assert abs(slope - order) <= TOLERANCE, f"{name} {measurement.options}: slope {slope:.2f}, errors {errors}"


def karras_to_zero(steps, sigma_max):
    """Karras et al. 2022 noise levels (rho = 7) from sigma_max to SIGMA_MIN, then 0: the schedules users run."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    rho = 7.0
    sigmas = (sigma_max ** (1 / rho) + ramp * (SIGMA_MIN ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


# Samplers whose end at sigma = 0 is handled their own way, measured on schedules that end in 0. The exact answer
# there is the denoising jump from the exact ODE solution at SIGMA_MIN, D(x(SIGMA_MIN), SIGMA_MIN): what every
# sampler's last step (to 0) computes. UniPC with its default lower orders at the end: third order. (ComfyUI's UniPC
# replaces the final 0 by 0.001 and stalls at ~8e-5 here from 64 steps on: order 0.1 between 128 and 256.)
ZERO_END_CASES = [("uni_pc", 2.5), ("uni_pc_bh2", 2.5)]


@pytest.mark.parametrize("name,least", ZERO_END_CASES, ids=[c[0] for c in ZERO_END_CASES])
@pytest.mark.parametrize("sigma_max", [10.0, 80.0])
def test_order_on_schedules_that_end_in_zero(problems, name, least, sigma_max):
    model, x, exact = problems(sigma_max, "ode")
    target = model(exact, torch.full((x.shape[0],), SIGMA_MIN, dtype=x.dtype))
    steps = (64, 128, 256)
    errors = [float((SAMPLER_SPECS[name].fn(model, x.clone(), karras_to_zero(n, sigma_max)) - target).norm()
                    / target.norm()) for n in steps]
    logs_n = torch.tensor([math.log(n) for n in steps], dtype=torch.float64)
    logs_e = torch.tensor([math.log(e) for e in errors], dtype=torch.float64)
    centred = logs_n - logs_n.mean()
    slope = float(-(centred * (logs_e - logs_e.mean())).sum() / (centred**2).sum())
    assert slope >= least, f"{name}: slope {slope:.2f} on Karras schedules ending in 0, errors {errors}"
    assert errors[-1] > 1e-10, f"{name}: errors {errors} reach the reference's own error"


def test_no_measurement_for_a_sampler_that_is_gone():
    assert set(MEASUREMENTS) <= set(SAMPLER_SPECS)
