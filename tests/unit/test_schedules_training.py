"""Training betas, zero terminal SNR and the model noise tables, against closed forms and diffusers."""

import math

import numpy
import pytest
import torch

from diffusion_blocks.schedules import FlowSchedule, ModelSchedule, rescale_zero_terminal_snr, training_betas
from diffusion_blocks.schedules.model import ZERO_SNR_ALPHA_CUMPROD

T = 1000


def sd1_schedule():
    return ModelSchedule.from_betas(training_betas("scaled_linear", timesteps=T, beta_start=0.00085, beta_end=0.012))


def test_linear_betas_closed_form():
    betas = training_betas("linear", timesteps=T, beta_start=1e-4, beta_end=0.02)
    expected = [1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)]
    assert betas.dtype == torch.float64 and betas.shape == (T,)
    numpy.testing.assert_allclose(betas.numpy(), expected, rtol=1e-13)


def test_scaled_linear_betas_are_linear_in_sqrt_beta():
    betas = training_betas("scaled_linear", timesteps=T, beta_start=0.00085, beta_end=0.012)
    roots = betas.sqrt().numpy()
    assert roots[0] == pytest.approx(math.sqrt(0.00085), rel=1e-14)
    assert roots[-1] == pytest.approx(math.sqrt(0.012), rel=1e-14)
    numpy.testing.assert_allclose(numpy.diff(roots), (math.sqrt(0.012) - math.sqrt(0.00085)) / (T - 1), rtol=1e-9)


def test_cosine_alpha_bar_closed_form():
    """Nichol & Dhariwal 2021, eq. 17 with s = 0.008; betas clipped at 0.999 (only the last step reaches it)."""
    betas = training_betas("cosine", timesteps=T)
    f = [math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(T + 1)]
    alpha_bar = torch.cumprod(1 - betas, 0).numpy()
    numpy.testing.assert_allclose(alpha_bar[:-1], [f[t] / f[0] for t in range(1, T)], rtol=1e-10)
    assert betas[-1] == 0.999 and (betas[:-1] < 0.999).all()


def test_sigmoid_betas_closed_form():
    betas = training_betas("sigmoid", timesteps=T, beta_start=1e-4, beta_end=0.02)
    x = [-6 + 12 * i / (T - 1) for i in range(T)]
    numpy.testing.assert_allclose(betas.numpy(), [1e-4 + (0.02 - 1e-4) / (1 + math.exp(-v)) for v in x], rtol=1e-12)


@pytest.mark.parametrize(
    "ours, theirs",
    [("linear", "linear"), ("scaled_linear", "scaled_linear"), ("cosine", "squaredcos_cap_v2"), ("sigmoid", "sigmoid")],
)
def test_betas_match_diffusers(ours, theirs):
    schedulers = pytest.importorskip("diffusers.schedulers")
    reference = schedulers.DDPMScheduler(
        num_train_timesteps=T, beta_start=0.00085, beta_end=0.012, beta_schedule=theirs
    )
    betas = training_betas(ours, timesteps=T, beta_start=0.00085, beta_end=0.012)
    torch.testing.assert_close(betas.float(), reference.betas.float(), rtol=2e-6, atol=1e-9)


def test_zero_terminal_snr():
    """Lin et al. 2024: alpha_bar_T = 0, alpha_bar_1 kept, sqrt(alpha_bar) an affine map of the original."""
    betas = training_betas("scaled_linear", timesteps=T, beta_start=0.00085, beta_end=0.012)
    rescaled = rescale_zero_terminal_snr(betas)
    before = torch.cumprod(1 - betas, 0).sqrt().numpy()
    after = torch.cumprod(1 - rescaled, 0).sqrt().numpy()
    assert rescaled.dtype == torch.float64
    assert rescaled[-1] == 1 and after[-1] == 0
    assert after[0] == pytest.approx(before[0], rel=1e-14)
    slope, intercept = numpy.polyfit(before, after, 1)
    numpy.testing.assert_allclose(slope * before + intercept, after, atol=1e-12)


def test_zero_terminal_snr_matches_diffusers():
    scheduling_ddim = pytest.importorskip("diffusers.schedulers.scheduling_ddim")
    betas = training_betas("scaled_linear", timesteps=T, beta_start=0.00085, beta_end=0.012)
    torch.testing.assert_close(rescale_zero_terminal_snr(betas), scheduling_ddim.rescale_zero_terminal_snr(betas))


def test_zero_snr_model_has_finite_documented_sigma_max():
    betas = rescale_zero_terminal_snr(training_betas("scaled_linear", timesteps=T, beta_start=0.00085, beta_end=0.012))
    schedule = ModelSchedule.from_betas(betas)
    assert schedule.sigma_max == pytest.approx(
        math.sqrt((1 - ZERO_SNR_ALPHA_CUMPROD) / ZERO_SNR_ALPHA_CUMPROD), rel=1e-6
    )
    assert schedule.sigma_max == pytest.approx(4096, rel=1e-6)
    assert (schedule.sigmas[1:] > schedule.sigmas[:-1]).all()


def test_model_table_closed_form():
    betas = numpy.linspace(0.00085**0.5, 0.012**0.5, T) ** 2
    alpha_bar = numpy.cumprod(1 - betas)
    schedule = sd1_schedule()
    assert schedule.sigmas.dtype == torch.float32 and schedule.sigmas.shape == (T,)
    numpy.testing.assert_allclose(schedule.sigmas.numpy(), numpy.sqrt((1 - alpha_bar) / alpha_bar), rtol=1e-7)
    assert isinstance(schedule.sigma_min, float) and isinstance(schedule.sigma_max, float)
    assert schedule.sigma_min == pytest.approx(0.02916716, rel=1e-6)  # the well-known SD1.x range
    assert schedule.sigma_max == pytest.approx(14.614642, rel=1e-6)
    assert ModelSchedule(schedule.sigmas).sigmas.equal(schedule.sigmas)


def test_model_sigma_at_integer_timesteps_is_the_table():
    schedule = sd1_schedule()
    t = torch.arange(T, dtype=torch.float64)
    torch.testing.assert_close(schedule.sigma(t), schedule.sigmas.double(), rtol=1e-7, atol=0)


def test_model_sigma_interpolates_log_sigma():
    schedule = sd1_schedule()
    low, high = schedule.sigmas[400].double(), schedule.sigmas[401].double()
    expected = torch.exp(0.75 * low.log() + 0.25 * high.log())
    torch.testing.assert_close(schedule.sigma(torch.tensor(400.25, dtype=torch.float64)), expected)


def test_model_timestep_round_trip():
    schedule = sd1_schedule()
    t = torch.rand(500, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * (T - 1)
    torch.testing.assert_close(schedule.timestep(schedule.sigma(t)), t, rtol=0, atol=1e-9)
    sigma = torch.exp(torch.empty(500, dtype=torch.float64).uniform_(math.log(0.03), math.log(14.6)))
    torch.testing.assert_close(schedule.sigma(schedule.timestep(sigma)), sigma, rtol=1e-12, atol=0)
    assert float(schedule.timestep(torch.tensor(schedule.sigma_max))) == T - 1
    assert float(schedule.timestep(torch.tensor(schedule.sigma_min))) == 0


def test_model_clamps_outside_the_table():
    schedule = sd1_schedule()
    assert float(schedule.sigma(-5.0)) == schedule.sigma_min
    assert float(schedule.sigma(5000.0)) == schedule.sigma_max
    assert float(schedule.timestep(100.0)) == T - 1
    assert float(schedule.timestep(0.0)) == 0


def test_model_output_dtype_and_device_follow_the_input():
    schedule = sd1_schedule()
    assert schedule.sigma(torch.tensor([3.0], dtype=torch.float64)).dtype == torch.float64
    assert schedule.sigma(torch.tensor([3])).dtype == torch.float32
    assert schedule.sigma(3).dtype == torch.float32
    assert schedule.timestep(torch.tensor([1.0], dtype=torch.float16)).dtype == torch.float16
    assert schedule.timestep(torch.ones(2, 3)).shape == (2, 3)


@pytest.mark.parametrize("shift", [1.0, 3.0, 0.5])
def test_flow_schedule_closed_form(shift):
    schedule = FlowSchedule(shift=shift, multiplier=1000)
    u = torch.linspace(0, 1, 101, dtype=torch.float64)
    torch.testing.assert_close(schedule.sigma(u * 1000), shift * u / (1 + (shift - 1) * u))
    assert schedule.sigma_max == 1.0
    assert schedule.sigma_min == pytest.approx(shift * 0.001 / (1 + (shift - 1) * 0.001), rel=1e-6)
    assert schedule.sigmas.dtype == torch.float32 and schedule.sigmas.shape == (1000,)
    assert (schedule.sigmas[1:] > schedule.sigmas[:-1]).all()


def test_flow_timestep_is_the_scaled_noise_level():
    """The network's time input is sigma * multiplier, so it inverts sigma(t) only without a shift."""
    sigma = torch.linspace(0.01, 1, 50, dtype=torch.float64)
    torch.testing.assert_close(FlowSchedule(shift=3.0, multiplier=1.0).timestep(sigma), sigma)
    torch.testing.assert_close(FlowSchedule(shift=3.0).timestep(sigma), sigma * 1000)
    plain = FlowSchedule(shift=1.0)
    torch.testing.assert_close(plain.sigma(plain.timestep(sigma)), sigma)
    shifted = FlowSchedule(shift=3.0)
    u = sigma / (3.0 - 2.0 * sigma)  # the unshifted time of each sigma, solving sigma = 3u / (1 + 2u)
    torch.testing.assert_close(shifted.sigma(u * 1000), sigma)


@pytest.mark.parametrize(
    "call, names",
    [
        (lambda: training_betas("quadratic"), ["quadratic", "linear", "scaled_linear", "cosine", "sigmoid"]),
        (lambda: training_betas("linear", timesteps=0), ["timesteps"]),
        (lambda: training_betas("linear", beta_start=0.0), ["beta_start"]),
        (lambda: training_betas("linear", beta_end=1.5), ["beta_end"]),
        (lambda: training_betas("linear", beta_end=float("nan")), ["beta_end"]),
        (lambda: rescale_zero_terminal_snr([0.5]), ["betas"]),
        (lambda: rescale_zero_terminal_snr([0.0, 0.0]), ["betas"]),
        (lambda: ModelSchedule.from_betas([0.1, -0.1]), ["betas"]),
        (lambda: ModelSchedule([2.0, 1.0]), ["ascending"]),
        (lambda: ModelSchedule([0.0, 1.0]), ["positive"]),
        (lambda: ModelSchedule([0.1, float("nan")]), ["finite"]),
        (lambda: FlowSchedule(shift=0), ["shift"]),
        (lambda: FlowSchedule(multiplier=-1), ["multiplier"]),
    ],
)
def test_errors_name_their_input(call, names):
    with pytest.raises(ValueError) as error:
        call()
    for name in names:
        assert name in str(error.value)
