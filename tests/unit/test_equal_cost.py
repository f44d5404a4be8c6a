"""Compare at equal cost: calls counted (not assumed), the most steps a budget pays for, and the same pictures as
sampling each cell on its own. Exact answers on the Gaussian mixture."""
import pytest
import torch

from diffusion_blocks.devtools.gmm import GaussianMixture
from diffusion_blocks.networks.families import FAMILIES
from diffusion_blocks.pipeline import generate
from diffusion_blocks.pipeline.equal_cost import compare_at_equal_cost, count_calls, steps_within
from diffusion_blocks.samplers import SAMPLERS
from diffusion_blocks.schedules import get_sigmas

SMALL = FAMILIES["small"]


class Counted:
    """The Gaussian-mixture denoiser dressed as the pack's Denoiser (family, schedule), counting its calls."""

    family, schedule = SMALL, SMALL.training.schedule()

    def __init__(self):
        self.gmm, self.calls = GaussianMixture(dim=4), 0

    def __call__(self, x, sigma, cond=None, uncond=None, cfg=1.0):
        self.calls += 1
        return self.gmm(x, sigma)


def karras(steps):
    return get_sigmas("karras", steps, model=SMALL.training.schedule())


@pytest.mark.parametrize("name, calls_of_steps", [
    ("euler", lambda n: n), ("dpmpp_2m", lambda n: n),
    ("heun", lambda n: 2 * n - 1),  # Karras et al. 2022, alg. 1: the last step, to sigma 0, is an Euler step
    ("dpm_2", lambda n: 2 * n - 1), ("dpmpp_2s_ancestral", lambda n: 2 * n - 1)])
def test_calls_are_what_the_algorithm_makes(name, calls_of_steps):
    for steps in (1, 4, 9):
        assert count_calls(SAMPLERS[name], karras(steps)) == calls_of_steps(steps)


@pytest.mark.parametrize("name", ["euler", "heun", "heunpp2", "dpmpp_2s_ancestral", "seeds_3", "restart", "lms"])
def test_the_budget_buys_the_most_steps_and_a_real_run_spends_what_was_counted(name):
    budget = 13
    steps, calls = steps_within(SAMPLERS[name], karras, budget)
    assert calls <= budget < count_calls(SAMPLERS[name], karras(steps + 1))
    model = Counted()
    generate(model, SAMPLERS[name], karras(steps), torch.zeros(1, 1, 2, 2), 0)
    assert model.calls == calls


def test_too_small_a_budget_is_refused_by_name():
    with pytest.raises(ValueError, match="calls: 1 model calls do not pay for one step"):
        steps_within(SAMPLERS["seeds_3"], lambda n: torch.tensor([5.0, 1.0, 0.1]), 1)


def test_each_cell_is_the_picture_of_its_own_sampling_run_with_the_same_seed():
    latent = torch.zeros(1, 1, 2, 2)
    results = compare_at_equal_cost(Counted(), {n: SAMPLERS[n] for n in ("euler_ancestral", "heun")},
                                    ["karras", "exponential"], 7, latent, 11)
    assert [(c.sampler, c.schedule, c.steps) for c, _ in results] == [
        ("euler_ancestral", "karras", 7), ("euler_ancestral", "exponential", 7), ("heun", "karras", 4),
        ("heun", "exponential", 4)]
    for cell, samples in results:
        sigmas = get_sigmas(cell.schedule, cell.steps, model=SMALL.training.schedule())
        alone = generate(Counted(), SAMPLERS[cell.sampler], sigmas, latent, 11).samples
        assert torch.equal(samples, alone), cell
    assert results[0][0].caption == "euler_ancestral, karras, 7 steps, 7 calls"
