"""Sampling schedules against closed forms, the registry's contract, denoise, and input validation."""

import inspect
import math

import numpy
import pytest
import torch

from diffusion_blocks.schedules import SCHEDULES, FlowSchedule, ModelSchedule, get_sigmas, training_betas
from diffusion_blocks.schedules.tables import AYS_NOISE_LEVELS, GITS_NOISE_LEVELS

SD1 = ModelSchedule.from_betas(training_betas("scaled_linear", timesteps=1000, beta_start=0.00085, beta_end=0.012))
FLOW = FlowSchedule(shift=3.0, multiplier=1000)
LOW, HIGH = 0.0292, 14.61
COMFYUI_NAMES = {
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
}
OTHER_NAMES = {
    "polyexponential",
    "vp",
    "laplace",
    "sd_turbo",
    "ays_sd1",
    "ays_sdxl",
    "ays_svd",
    "gits",
    "leading",
    "trailing",
    "linspace",
}


def table(indices):
    """SD1 table values at integer timesteps, as float64."""
    return SD1.sigmas.double()[list(indices)]


# The registry -----------------------------------------------------------------------------------------------------


def test_registry_names():
    assert set(SCHEDULES) == COMFYUI_NAMES | OTHER_NAMES


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_spec_describes_its_function(name):
    spec = SCHEDULES[name]
    with pytest.raises(AttributeError):
        spec.summary = "changed"  # frozen
    assert isinstance(spec.needs_table, bool) and isinstance(spec.params, dict)
    assert spec.summary and "\n" not in spec.summary
    signature = inspect.signature(spec.fn).parameters
    for option, default in spec.params.items():
        assert signature[option].default == default, (name, option)


@pytest.mark.parametrize("model", [SD1, FLOW], ids=["sd1", "flow"])
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_output_contract(name, model):
    for steps in (1, 2, 5, 10, 37):
        if name == "sd_turbo" and steps > 10:
            continue
        sigmas = get_sigmas(name, steps, model=model)
        assert sigmas.dtype == torch.float32 and sigmas.device.type == "cpu" and sigmas.ndim == 1
        assert sigmas[-1] == 0 and (sigmas[:-1] > 0).all()
        assert (sigmas[1:] <= sigmas[:-1]).all(), f"{name} {steps}: {sigmas.tolist()}"
        if name not in {"ddim_uniform", "beta"}:  # documented: these may give a few more or fewer steps
            assert len(sigmas) == steps + 1


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_denoise_keeps_the_tail_of_a_longer_schedule(name):
    for steps, denoise in ((4, 0.5), (3, 0.7), (10, 0.33), (1, 0.25)):
        total = int(steps / denoise)
        if name == "sd_turbo" and total > 10:
            continue
        expected = get_sigmas(name, total, model=SD1)[-(steps + 1) :]
        assert get_sigmas(name, steps, model=SD1, denoise=denoise).equal(expected), (name, steps, denoise)


# Schedules over a noise range: closed forms ------------------------------------------------------------------------


@pytest.mark.parametrize("rho", [7.0, 3.0, 1.0])
def test_karras(rho):
    """Karras et al. 2022, eq. 5: sigma^(1/rho) evenly spaced from sigma_max to sigma_min, then 0."""
    sigmas = get_sigmas("karras", 20, sigma_min=LOW, sigma_max=HIGH, rho=rho).double()
    assert sigmas[0] == pytest.approx(HIGH, rel=1e-6) and sigmas[-2] == pytest.approx(LOW, rel=1e-6)
    assert sigmas[-1] == 0 and len(sigmas) == 21
    expected = [(HIGH ** (1 / rho) + i / 19 * (LOW ** (1 / rho) - HIGH ** (1 / rho))) ** rho for i in range(20)]
    numpy.testing.assert_allclose(sigmas[:-1].numpy(), expected, rtol=1e-6)
    steps = numpy.diff(sigmas[:-1].numpy() ** (1 / rho))
    numpy.testing.assert_allclose(steps, steps[0], rtol=1e-4)


def test_karras_one_step_is_sigma_max():
    assert get_sigmas("karras", 1, sigma_min=LOW, sigma_max=HIGH).tolist() == [pytest.approx(HIGH), 0.0]


def test_exponential_is_evenly_spaced_in_log_sigma():
    sigmas = get_sigmas("exponential", 12, sigma_min=LOW, sigma_max=HIGH).double()
    numpy.testing.assert_allclose(
        sigmas[:-1].log().numpy(), numpy.linspace(math.log(HIGH), math.log(LOW), 12), rtol=1e-6
    )


def test_polyexponential():
    assert get_sigmas("polyexponential", 9, sigma_min=LOW, sigma_max=HIGH).equal(
        get_sigmas("exponential", 9, sigma_min=LOW, sigma_max=HIGH)
    )
    sigmas = get_sigmas("polyexponential", 9, sigma_min=LOW, sigma_max=HIGH, rho=2.0).double()
    ramp = (1 - numpy.arange(9) / 8) ** 2
    numpy.testing.assert_allclose(
        sigmas[:-1].numpy(), numpy.exp(math.log(LOW) + ramp * math.log(HIGH / LOW)), rtol=1e-6
    )


def test_kl_optimal_is_evenly_spaced_in_arctan():
    sigmas = get_sigmas("kl_optimal", 15, sigma_min=LOW, sigma_max=HIGH).double()
    numpy.testing.assert_allclose(
        sigmas[:-1].atan().numpy(), numpy.linspace(math.atan(HIGH), math.atan(LOW), 15), rtol=1e-6
    )
    assert get_sigmas("kl_optimal", 1, sigma_min=LOW, sigma_max=HIGH).tolist() == [pytest.approx(HIGH), 0.0]


def test_laplace():
    """log sigma at Laplace(mu, beta) quantiles: the median is exp(mu), the tails clamp to the range."""
    sigmas = get_sigmas("laplace", 21, sigma_min=LOW, sigma_max=HIGH, mu=0.3, beta=0.5).double()
    assert sigmas[10] == pytest.approx(math.exp(0.3), rel=1e-6)
    assert sigmas[0] == pytest.approx(HIGH, rel=1e-6) and sigmas[-2] == pytest.approx(LOW, rel=1e-6)
    p = 1 - 3 / 20  # probability of the quantile at index 3; Laplace quantile mu - beta log(2 (1 - p)) above the median
    assert sigmas[3] == pytest.approx(math.exp(0.3 - 0.5 * math.log(2 * (1 - p) + 1e-5)), rel=1e-6)


def test_vp_closed_form():
    """Song et al. 2021: sigma^2 + 1 = exp(beta_d t^2 / 2 + beta_min t), t evenly from 1 to eps_s."""
    sigmas = get_sigmas("vp", 10, beta_d=19.9, beta_min=0.1, eps_s=1e-3).double()
    t = numpy.linspace(1, 1e-3, 10)
    numpy.testing.assert_allclose(sigmas[:-1].numpy() ** 2 + 1, numpy.exp(19.9 * t**2 / 2 + 0.1 * t), rtol=1e-6)


def test_linear_quadratic_shape():
    """Removed noise 1 - sigma/sigma_max: linear with slope threshold/L, then quadratic reaching 1, slope continuous."""
    steps, threshold = 20, 0.025
    removed = 1 - get_sigmas("linear_quadratic", steps, sigma_max=2.0, threshold_noise=threshold).double().numpy() / 2.0
    linear = steps // 2
    numpy.testing.assert_allclose(removed[: linear + 1], threshold * numpy.arange(linear + 1) / linear, atol=1e-7)
    second = numpy.diff(removed[linear:], 2)
    numpy.testing.assert_allclose(second, second[0], rtol=1e-4)
    slope_after = removed[linear + 1] - removed[linear] - second[0] / 2  # derivative of the quadratic at L
    assert slope_after == pytest.approx(threshold / linear, rel=1e-3)
    assert removed[-1] == 1
    assert get_sigmas("linear_quadratic", 1, sigma_max=2.0).tolist() == [2.0, 0.0]


def test_linear_quadratic_linear_steps():
    removed = 1 - get_sigmas("linear_quadratic", 10, sigma_max=1.0, linear_steps=3).double().numpy()
    numpy.testing.assert_allclose(removed[:4], 0.025 * numpy.arange(4) / 3, atol=1e-7)


# Schedules on a model's table: exact table entries ----------------------------------------------------------------


def test_simple_takes_every_stride_th_entry():
    torch.testing.assert_close(get_sigmas("simple", 10, model=SD1)[:-1].double(), table(range(999, -1, -100)))
    torch.testing.assert_close(get_sigmas("simple", 4, model=SD1)[:-1].double(), table([999, 749, 499, 249]))


def test_normal_with_one_step_per_timestep_is_the_table():
    sigmas = get_sigmas("normal", 1000, model=SD1)
    torch.testing.assert_close(sigmas[:-1], SD1.sigmas.flip(0), rtol=1e-6, atol=0)
    assert sigmas[-1] == 0


def test_sgm_uniform_leaves_out_sigma_min():
    sigmas = get_sigmas("sgm_uniform", 999, model=SD1)
    torch.testing.assert_close(sigmas[:-1], SD1.sigmas[1:].flip(0), rtol=1e-6, atol=0)


def test_normal_between_table_entries():
    sigmas = get_sigmas("normal", 3, model=SD1).double()  # timesteps 999, 499.5, 0
    assert sigmas[1] == pytest.approx(math.sqrt(table([499])[0] * table([500])[0]), rel=1e-6)


def test_ddim_uniform():
    torch.testing.assert_close(get_sigmas("ddim_uniform", 10, model=SD1)[:-1].double(), table(range(901, 0, -100)))
    assert len(get_sigmas("ddim_uniform", 7, model=SD1)) == 9  # 1000 // 7 = 142: timesteps 1, 143, ..., 995


def test_beta_with_uniform_quantiles():
    """alpha = beta = 1 is the uniform distribution: quantile p, so 9 steps are timesteps 999 - 111 k."""
    sigmas = get_sigmas("beta", 9, model=SD1, alpha=1.0, beta=1.0)
    torch.testing.assert_close(sigmas[:-1].double(), table(range(999, 0, -111)))


def test_beta_indices_match_scipy_quantiles():
    stats = pytest.importorskip("scipy.stats")
    for steps in (5, 10, 20, 33, 50, 100):
        quantiles = stats.beta.ppf(1 - numpy.linspace(0, 1, steps, endpoint=False), 0.6, 0.6)
        indices = list(dict.fromkeys(int(i) for i in numpy.rint(quantiles * 999)))
        torch.testing.assert_close(get_sigmas("beta", steps, model=SD1)[:-1].double(), table(indices))


def test_beta_exact_tie_rounds_half_to_even():
    """Beta(2, 3) has I_0.5 = 11/16 exactly: 16 steps put a quantile at timestep 499.5, which rounds to 500."""
    sigmas = get_sigmas("beta", 16, model=SD1, alpha=2.0, beta=3.0)
    assert table([500])[0].float() in sigmas


def test_sd_turbo():
    torch.testing.assert_close(get_sigmas("sd_turbo", 4, model=SD1)[:-1].double(), table([999, 899, 799, 699]))


def test_align_your_steps_tables():
    for model_type, levels in AYS_NOISE_LEVELS.items():
        sigmas = get_sigmas(f"ays_{model_type}", 10)
        torch.testing.assert_close(sigmas[:-1], torch.tensor(levels[:-1], dtype=torch.float32))
        assert sigmas[-1] == 0
        doubled = get_sigmas(f"ays_{model_type}", 20)  # even points of the 20-step interpolation are the table
        torch.testing.assert_close(doubled[:-1:2], torch.tensor(levels[:-1], dtype=torch.float32), rtol=1e-6, atol=0)
        middle = math.sqrt(
            levels[0] * levels[1]
        )  # log-linear: the point between two table levels is their geometric mean
        assert float(doubled[1]) == pytest.approx(middle, rel=1e-6)


def test_gits_tables():
    for coeff, rows in GITS_NOISE_LEVELS.items():
        assert len(rows) == 19
        for steps in range(2, 21):
            sigmas = get_sigmas("gits", steps, coeff=coeff)
            torch.testing.assert_close(sigmas[:-1], torch.tensor(rows[steps - 2][:-1], dtype=torch.float32))
    longer = get_sigmas("gits", 40, coeff=1.2)
    torch.testing.assert_close(longer[:-1:2], torch.tensor(GITS_NOISE_LEVELS[1.2][-1][:-1], dtype=torch.float32))
    assert get_sigmas("gits", 5, coeff=1.2000001).equal(get_sigmas("gits", 5, coeff=1.2))


def test_fixed_schedules_ignore_the_model():
    for name in ("vp", "ays_sd1", "ays_svd", "gits"):
        assert get_sigmas(name, 8, model=FLOW).equal(get_sigmas(name, 8))


def test_range_schedules_read_the_model_range_unless_overridden():
    assert get_sigmas("karras", 8, model=SD1).equal(
        get_sigmas("karras", 8, sigma_min=SD1.sigma_min, sigma_max=SD1.sigma_max)
    )
    assert get_sigmas("karras", 8, model=SD1, sigma_max=80.0).equal(
        get_sigmas("karras", 8, sigma_min=SD1.sigma_min, sigma_max=80.0)
    )
    assert get_sigmas("linear_quadratic", 8, model=FLOW).equal(get_sigmas("linear_quadratic", 8, sigma_max=1.0))


# Validation: every error names its input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, names",
    [
        (dict(name="karras", steps=0, sigma_min=LOW, sigma_max=HIGH), ["steps"]),
        (dict(name="karras", steps=2.5, sigma_min=LOW, sigma_max=HIGH), ["steps"]),
        (dict(name="karras", steps=True, sigma_min=LOW, sigma_max=HIGH), ["steps"]),
        (dict(name="karras", steps=5, sigma_min=HIGH, sigma_max=LOW), ["sigma_min", "sigma_max"]),
        (dict(name="karras", steps=5, sigma_min=1.0, sigma_max=1.0), ["sigma_min", "sigma_max"]),
        (dict(name="karras", steps=5, sigma_min=-1.0, sigma_max=HIGH), ["sigma_min"]),
        (dict(name="karras", steps=5, sigma_min=LOW, sigma_max=float("nan")), ["sigma_max"]),
        (dict(name="karras", steps=5, sigma_min=LOW, sigma_max=float("inf")), ["sigma_max"]),
        (dict(name="karras", steps=5, sigma_min=LOW), ["sigma_max", "model"]),
        (dict(name="karras", steps=5), ["sigma_min", "model"]),
        (dict(name="karras", steps=5, sigma_min=LOW, sigma_max=HIGH, rho=0.0), ["rho"]),
        (dict(name="karras", steps=5, sigma_min=LOW, sigma_max=HIGH, eta=1.0), ["eta", "rho"]),
        (dict(name="karras", steps=5, sigma_min=LOW, sigma_max=HIGH, denoise=0.0), ["denoise"]),
        (dict(name="karras", steps=5, sigma_min=LOW, sigma_max=HIGH, denoise=1.5), ["denoise"]),
        (dict(name="karras", steps=5, sigma_min=LOW, sigma_max=HIGH, denoise=float("nan")), ["denoise"]),
        (dict(name="karras", steps=5, sigma_min=LOW, sigma_max=HIGH, denoise=-0.5), ["denoise"]),
        (dict(name="karas", steps=5, model=SD1), ["karas", "karras", "normal", "ays_sd1"]),
        (dict(name="normal", steps=5, sigma_min=LOW, sigma_max=HIGH), ["normal", "model", "range"]),
        (dict(name="normal", steps=5, model=SD1, sigma_min=LOW), ["normal", "sigma_min"]),
        (dict(name="normal", steps=5), ["normal", "model"]),
        (dict(name="ays_sd1", steps=5, sigma_max=HIGH), ["ays_sd1", "sigma_max"]),
        (dict(name="linear_quadratic", steps=5, sigma_min=LOW, sigma_max=HIGH), ["sigma_min"]),
        (dict(name="linear_quadratic", steps=5, sigma_max=HIGH, threshold_noise=1.5), ["threshold_noise"]),
        (dict(name="linear_quadratic", steps=5, sigma_max=HIGH, linear_steps=5), ["linear_steps"]),
        (dict(name="beta", steps=5, model=SD1, alpha=0.0), ["alpha"]),
        (dict(name="beta", steps=5, model=SD1, gamma=1.0), ["gamma", "alpha", "beta"]),
        (dict(name="laplace", steps=5, model=SD1, beta=-1.0), ["beta"]),
        (dict(name="vp", steps=5, eps_s=0.0), ["eps_s"]),
        (dict(name="vp", steps=5, beta_min=-0.1), ["beta_min"]),
        (dict(name="gits", steps=5, coeff=0.7), ["coeff", "0.80", "1.50"]),
        (dict(name="sd_turbo", steps=11, model=SD1), ["sd_turbo", "10"]),
        (dict(name="sd_turbo", steps=6, model=SD1, denoise=0.5), ["sd_turbo", "12"]),
        (dict(name="leading", steps=1001, model=SD1), ["steps", "1000"]),
        (dict(name="leading", steps=5, model=SD1, steps_offset=-1), ["steps_offset"]),
        (dict(name="leading", steps=1000, model=SD1, steps_offset=1), ["steps_offset"]),
    ],
)
def test_errors_name_their_input(kwargs, names):
    with pytest.raises(ValueError) as error:
        get_sigmas(**kwargs)
    for name in names:
        assert name in str(error.value), str(error.value)
