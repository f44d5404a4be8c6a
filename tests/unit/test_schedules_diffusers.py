"""diffusers parity: leading / trailing / linspace against EulerDiscreteScheduler sigmas and DDIMScheduler timesteps."""

import numpy
import pytest
import torch

from diffusion_blocks.schedules import ModelSchedule, get_sigmas, spaced_timesteps, training_betas

schedulers = pytest.importorskip("diffusers.schedulers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers' numpy 2 copy= notice, per call

SD_CONFIG = dict(  # Stable Diffusion 1.x's scheduler_config.json, as far as these schedulers read it
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
)
SPACINGS = ["leading", "trailing", "linspace"]
STEPS = range(1, 101)


@pytest.fixture(scope="module")
def sd1():
    return ModelSchedule.from_betas(training_betas("scaled_linear", timesteps=1000, beta_start=0.00085, beta_end=0.012))


@pytest.mark.parametrize("spacing", SPACINGS)
def test_euler_discrete_sigmas(sd1, spacing):
    """diffusers builds its table in float32 (betas, cumprod), ours in float64: they agree to ~1.3e-5 (at sigma_min)."""
    scheduler = schedulers.EulerDiscreteScheduler(**SD_CONFIG, timestep_spacing=spacing)
    for steps in STEPS:
        scheduler.set_timesteps(steps)
        if len(scheduler.timesteps) != steps:
            continue  # see test_diffusers_trailing_extra_timestep
        ours = get_sigmas(spacing, steps, model=sd1)
        assert ours.shape == scheduler.sigmas.shape, f"{spacing} steps={steps}"
        assert ours[-1] == 0
        torch.testing.assert_close(ours, scheduler.sigmas.float(), rtol=2e-5, atol=0, msg=f"{spacing} steps={steps}")
        expected_timesteps = scheduler.timesteps.double()
        torch.testing.assert_close(spaced_timesteps(spacing, steps), expected_timesteps, rtol=0, atol=1e-4)


@pytest.mark.parametrize("spacing", SPACINGS)
def test_ddim_timesteps(spacing):
    """DDIM rounds the linspace timesteps to integers; leading and trailing are integers already."""
    scheduler = schedulers.DDIMScheduler(**SD_CONFIG, timestep_spacing=spacing)
    for steps in STEPS:
        scheduler.set_timesteps(steps)
        if len(scheduler.timesteps) != steps:
            continue  # see test_diffusers_trailing_extra_timestep
        ours = spaced_timesteps(spacing, steps)
        if spacing == "linspace":
            ours = torch.from_numpy(numpy.round(ours.numpy()))
        assert ours.tolist() == scheduler.timesteps.tolist(), f"{spacing} steps={steps}"


def test_leading_offset_zero_matches_diffusers_default(sd1):
    scheduler = schedulers.EulerDiscreteScheduler(**{**SD_CONFIG, "steps_offset": 0}, timestep_spacing="leading")
    for steps in (1, 7, 50):
        scheduler.set_timesteps(steps)
        torch.testing.assert_close(
            get_sigmas("leading", steps, model=sd1, steps_offset=0), scheduler.sigmas.float(), rtol=2e-5, atol=0
        )


def test_diffusers_trailing_extra_timestep():
    """diffusers' trailing grid (numpy.arange with a float step) gains a spurious last timestep of -1 for some step
    counts; ours keeps exactly `steps` timesteps, the same as diffusers' first `steps`."""
    scheduler = schedulers.DDIMScheduler(**SD_CONFIG, timestep_spacing="trailing")
    odd = [steps for steps in STEPS if (scheduler.set_timesteps(steps), len(scheduler.timesteps))[1] != steps]
    assert odd == [61]
    scheduler.set_timesteps(61)
    assert scheduler.timesteps[-1] == -1
    assert spaced_timesteps("trailing", 61).tolist() == scheduler.timesteps[:61].tolist()
