"""Budgets for everything that can grow: latent and sampling memory, grid size, the adaptive sampler's model calls.

Exact answers: the documented formulas, the largest size reported fitting while the next one up does not, the grid's
computed size equal to the drawn canvas, and the call cap checked against the calls an uncapped run makes."""
import math
import re

import numpy as np
import pytest
import torch

from diffusion_blocks.devtools.gmm import GaussianMixture
from diffusion_blocks.pipeline import budget
from diffusion_blocks.samplers import SAMPLERS, dpm_solver, sampler_options
from diffusion_blocks.views import grid

GIB = 2**30


def reported_side(message):
    return int(re.search(r"largest square image that fits is (\d+)x\1 pixels", message).group(1))


def test_sampling_bytes_is_the_documented_formula():
    # 4 bytes * B*H*W * (16 C + 24 model_channels * passes + 2 C * recorded steps)
    assert budget.sampling_bytes((2, 3, 64, 48), 32) == 4 * 2 * 64 * 48 * (16 * 3 + 24 * 32 * 2)
    assert budget.sampling_bytes((2, 3, 64, 48), 32, guided=False, recorded_steps=10) == \
        4 * 2 * 64 * 48 * (16 * 3 + 24 * 32 + 2 * 10 * 3)
    assert budget.latent_bytes((4096, 3, 16384, 16384)) == 4 * 4096 * 3 * 16384**2  # the 13 TB


def test_empty_latent_beyond_free_memory_is_refused_with_the_largest_size_that_fits():
    free = 10 * GIB
    shape = (4096, 3, 16384, 16384)
    with pytest.raises(ValueError) as refused:
        budget.check_latent_size(shape, free)
    message = str(refused.value)
    assert message.startswith("width / height / batch_size: 4096 images of 16384x16384 pixels")
    assert "10.0 GiB ComfyUI reports free" in message and "pack's maximum of 2,147,483,647" in message
    side, limit = reported_side(message), min(free, 4 * budget.MAX_LATENT_ELEMENTS)  # the tighter of the two
    assert budget.latent_bytes((4096, 3, side, side)) <= limit < budget.latent_bytes((4096, 3, side + 8, side + 8))
    most = budget.MAX_LATENT_ELEMENTS * 4 // budget.latent_bytes((1, 3, 16384, 16384))  # the pack maximum binds
    assert f"at 16384x16384 pixels at most {most} images fit" in message
    budget.check_latent_size((1, 3, 1024, 1024), free)  # 12 MiB: fine


def test_sd_latents_report_image_pixels():
    with pytest.raises(ValueError) as refused:
        budget.check_latent_size((1, 4, 2048, 2048), 32 * 2**20, pixels_per_latent=8)
    side = reported_side(str(refused.value))
    assert "1 image of 16384x16384 pixels" in str(refused.value)
    assert side % 8 == 0 and budget.latent_bytes((1, 4, side // 8, side // 8)) <= 32 * 2**20
    assert budget.latent_bytes((1, 4, side // 8 + 1, side // 8 + 1)) > 32 * 2**20


def test_sampling_beyond_free_memory_is_refused_naming_the_input():
    free = 10 * GIB
    with pytest.raises(ValueError) as refused:
        budget.check_sampling_size((1, 3, 8192, 8192), 32, free)
    message = str(refused.value)
    assert message.startswith("latent: sampling 1 image of 8192x8192 pixels")
    assert "not even one image fits" in message
    side = reported_side(message)
    budget.check_sampling_size((1, 3, side, side), 32, free)  # the size it names is accepted
    with pytest.raises(ValueError):
        budget.check_sampling_size((1, 3, side + 8, side + 8), 32, free)
    budget.check_sampling_size((1, 3, 64, 64), 32, free)


def test_recorded_steps_and_guidance_count():
    shape, free = (1, 3, 512, 512), budget.sampling_bytes((1, 3, 512, 512), 32)
    budget.check_sampling_size(shape, 32, free)
    budget.check_sampling_size(shape, 32, free - 1, guided=False)  # one pass needs less
    with pytest.raises(ValueError, match="the recorded steps"):
        budget.check_sampling_size(shape, 32, free, recorded_steps=1)


def test_the_pack_maximum_binds_even_with_memory_to_spare():
    with pytest.raises(ValueError, match="latent: .*more than the pack's maximum of 2,147,483,647 numbers"):
        budget.check_sampling_size((1, 4, 32768, 32768), 0, 2**60, guided=False)


@pytest.mark.parametrize("count, columns, cell", [(3, 0, 64), (16, 8, 128), (5, 2, 200)])
def test_grid_size_is_the_drawn_canvas(count, columns, cell):
    pictures = [np.zeros((cell // 2, cell // 2, 3), np.float32)] * count
    canvas = grid.image_grid(pictures, ["x"] * count, columns=columns, cell_size=cell)
    assert canvas.size == grid.grid_size(count, columns, cell)


def test_trajectory_grid_over_the_cap_is_refused_with_what_fits():
    layout = lambda n: (2 * n, n)  # noqa: E731  (Denoising Trajectory: two rows, one column per step shown)
    with pytest.raises(ValueError) as refused:
        grid.check_grid_size(1000, 2048, layout=layout, shown_input="steps_shown")
    message = str(refused.value)
    assert message.startswith("cell_size / steps_shown: 1000 steps_shown in cells of 2048 pixels")
    most = int(re.search(r"at cell_size 2048 at most (\d+) steps_shown fit", message).group(1))
    largest = int(re.search(r"fit in cells of at most (\d+) pixels", message).group(1))

    def pixels(n, cell):
        width, height = grid.grid_size(*layout(n), cell)
        return width * height

    assert pixels(most, 2048) <= grid.MAX_GRID_PIXELS < pixels(most + 1, 2048)
    assert pixels(1000, largest) <= grid.MAX_GRID_PIXELS < pixels(1000, largest + 1)
    grid.check_grid_size(8, 128, layout=layout)  # the example workflow's grid


def test_image_grid_refuses_before_drawing():
    huge = [np.zeros((4096, 4096, 3), np.float32)] * 3
    with pytest.raises(ValueError, match=r"cell_size / images: 3 images in cells of 4096 pixels .* more than the 33.6 "
                                         r"million a grid may have"):
        grid.image_grid(huge, [], cell_size=0)


# --- the adaptive sampler's call cap and progress ------------------------------------------------------------------

SIGMAS = torch.tensor([10.0, 3.0, 1.0, 0.3, 0.1], dtype=torch.float64)  # 4 steps, as the example


def start(gmm):
    return gmm.sample_prior(2, float(SIGMAS[0]), seed=3)


def test_max_calls_is_a_visible_option_with_a_default():
    assert sampler_options("dpm_adaptive")["max_calls"] == dpm_solver.DEFAULT_MAX_CALLS == 500


def test_the_cap_allows_exactly_the_calls_a_run_needs():
    gmm = GaussianMixture(dim=8)
    free = dpm_solver.dpm_adaptive(gmm, start(gmm), SIGMAS, rtol=1e-4, atol=1e-4, max_calls=100_000)
    needed = gmm.calls
    assert needed > 60  # tight tolerances: many steps
    capped = GaussianMixture(dim=8)
    torch.testing.assert_close(dpm_solver.dpm_adaptive(capped, start(capped), SIGMAS, rtol=1e-4, atol=1e-4,
                                                       max_calls=needed), free, rtol=0, atol=0)
    assert capped.calls == needed
    short = GaussianMixture(dim=8)
    with pytest.raises(ValueError) as refused:
        dpm_solver.dpm_adaptive(short, start(short), SIGMAS, rtol=1e-4, atol=1e-4, max_calls=needed - 1)
    assert short.calls <= needed - 1
    message = str(refused.value)
    assert message.startswith(f"max_calls: dpm_adaptive used {short.calls} of its {needed - 1} model calls")
    assert "rtol 0.0001 and atol 0.0001" in message


def test_bad_max_calls_are_named():
    gmm = GaussianMixture(dim=8)
    for bad in (0, 2, 2.5, True):
        with pytest.raises(ValueError, match="max_calls: expected a whole number of at least 3"):
            SAMPLERS["dpm_adaptive"](gmm, start(gmm), SIGMAS, max_calls=bad)


def test_progress_is_reported_in_the_schedules_steps():
    """i = min(steps - 1, floor(steps * max(share of log-sigma covered, share of max_calls used))): the bar moves."""
    gmm, reports, max_calls = GaussianMixture(dim=8), [], 200
    steps = len(SIGMAS) - 1
    log_start, log_end = math.log(SIGMAS[0]), math.log(SIGMAS[-1])

    def callback(info):
        reports.append((info["i"], float(info["sigma"]), gmm.calls))

    dpm_solver.dpm_adaptive(gmm, start(gmm), SIGMAS, callback=callback, rtol=1e-3, atol=1e-3, max_calls=max_calls)
    assert len(reports) > 2 * steps  # more reports than the schedule has steps
    for i, sigma, calls in reports:
        covered = (log_start - math.log(sigma)) / (log_start - log_end)
        assert i == min(steps - 1, int(steps * max(covered, calls / max_calls)))
    shown = [i for i, _, _ in reports]
    assert shown[0] == 0 and shown[-1] == steps - 1 and shown == sorted(shown)
