"""Plot Sigmas' drawing: the picture has the asked size, one coloured line per series, and readable axes."""
import numpy as np
import pytest

from diffusion_blocks.views.plot import PALETTE, plot_sigmas


def colour_pixels(image, colour, tolerance=40):
    pixels = np.asarray(image, dtype=np.int32)
    return int((np.abs(pixels - np.array(colour)).sum(-1) < tolerance).sum())


def test_each_series_is_drawn_in_its_own_colour():
    steep = np.array([14.6, 5.0, 1.0, 0.1, 0.0])
    shallow = np.array([14.6, 10.0, 6.0, 3.0, 0.0])
    image = plot_sigmas([steep, shallow], ["steep", "shallow"], width=640, height=480)
    assert image.size == (640, 480)
    assert colour_pixels(image, PALETTE[0]) > 300 and colour_pixels(image, PALETTE[1]) > 300
    assert colour_pixels(image, PALETTE[2]) == 0


def test_a_higher_schedule_is_drawn_higher_on_the_canvas():
    low = np.array([1.0, 0.5, 0.25])
    high = np.array([100.0, 50.0, 25.0])
    image = np.asarray(plot_sigmas([low, high], ["low", "high"], width=600, height=400))
    rows_low = np.nonzero((np.abs(image.astype(int) - PALETTE[0]).sum(-1) < 40)[:, 100:450])[0]
    rows_high = np.nonzero((np.abs(image.astype(int) - PALETTE[1]).sum(-1) < 40)[:, 100:450])[0]
    assert rows_high.mean() < rows_low.mean()  # image rows grow downwards


@pytest.mark.parametrize("log_scale", [True, False])
def test_a_final_zero_and_single_step_schedules_are_drawn(log_scale):
    image = plot_sigmas([np.array([3.0, 0.0])], ["one step"], width=512, height=512, log_scale=log_scale)
    assert colour_pixels(image, PALETTE[0]) > 50


def test_nothing_to_plot_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one"):
        plot_sigmas([], [])
