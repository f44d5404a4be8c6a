"""Per-item seeds: item k of a batch run with seed s is the single-image run with seed s + k, for every stochastic
sampler in the registry; a list of seeds gives each item its own. No ComfyUI here."""
import pytest
import torch

from diffusion_blocks.devtools.gmm import GaussianMixture
from diffusion_blocks.samplers import SAMPLER_SPECS
from diffusion_blocks.samplers.common import NoiseStream, item_seeds, seeded_noise_sampler
from diffusion_blocks.schedules import get_sigmas

STOCHASTIC = sorted(name for name, spec in SAMPLER_SPECS.items() if spec.stochastic)
SIGMAS = get_sigmas("karras", 6, sigma_min=0.03, sigma_max=10.0)  # ends in 0; crosses SA-Solver's noise band


def run(name, x, seed):
    return SAMPLER_SPECS[name].fn(GaussianMixture(dim=4), x.clone(), SIGMAS, extra_args={"seed": seed})


@pytest.mark.parametrize("name", STOCHASTIC)
def test_batch_items_are_the_single_runs_of_their_seeds(name):
    start = GaussianMixture(dim=4).sample_prior(1, 10.0)
    batch = start.expand(3, -1)  # the same start for every item: only the noise tells them apart
    for seed, singles in ((5, (5, 6, 7)), ([9, 2, 4], (9, 2, 4)), (torch.tensor([9, 2, 4]), (9, 2, 4))):
        together = run(name, batch, seed)
        alone = torch.cat([run(name, start, single) for single in singles])
        torch.testing.assert_close(together, alone, rtol=1e-6, atol=1e-6, msg=f"{name}, seed {seed}")
    assert min((together[i] - together[j]).abs().max() for i, j in ((0, 1), (0, 2), (1, 2))) > 1e-3


def test_one_item_draws_what_one_generator_draws_after_the_start_noise():
    """Batch size 1: the generator of the seed, bit for bit; its first draw is the start noise (ComfyUI's
    prepare_noise), so a sampler's own step noise is its second draw onwards."""
    x = torch.zeros(1, 3, 5, 6, dtype=torch.float64)
    noise, generator = seeded_noise_sampler(x, 123), torch.Generator().manual_seed(123)
    start = torch.randn(1, 3, 5, 6, generator=generator, dtype=torch.float32)
    assert torch.equal(NoiseStream(x.shape, 123).draw(), start)
    for _ in range(2):
        expected = torch.randn(1, 3, 5, 6, generator=generator, dtype=torch.float32).double()
        assert torch.equal(noise(), expected)


def test_an_ancestral_step_adds_fresh_noise_not_the_start_noise_again():
    """On a denoiser that answers 0, one euler_ancestral step from x = 0 adds exactly sigma_up times its step noise:
    the seed's second draw, independent of the start noise (its first)."""
    x, sigmas, seed = torch.zeros(1, 4, 8, 8), torch.tensor([1.0, 0.5]), 7
    sigma_up = (0.5**2 * (1.0**2 - 0.5**2) / 1.0**2) ** 0.5
    out = SAMPLER_SPECS["euler_ancestral"].fn(lambda x, sigma, **kw: torch.zeros_like(x), x, sigmas,
                                              extra_args={"seed": seed})
    stream = NoiseStream(x.shape, seed)
    start, step = stream.draw(), stream.draw()
    torch.testing.assert_close(out / sigma_up, step, rtol=1e-6, atol=1e-6)
    assert (out / sigma_up - start).abs().max() > 0.5


def test_a_resumed_stream_goes_on_where_the_first_stopped():
    whole = NoiseStream((2, 3), [4, 8])
    draws = [whole.draw() for _ in range(5)]
    resumed = NoiseStream.resumed((2, 3), whole.seeds, 3)
    assert torch.equal(resumed.draw(), draws[3]) and torch.equal(resumed.draw(), draws[4])


def test_item_seeds():
    assert item_seeds(None, 3) == [0, 1, 2]
    assert item_seeds(5, 2) == [5, 6] and item_seeds(torch.tensor(5), 2) == [5, 6]
    assert item_seeds((4, 4), 2) == [4, 4]
    assert item_seeds(2**64 - 1, 2) == [2**64 - 1, 0]  # wraps like torch's own seed range
    with pytest.raises(ValueError, match="3 seeds for a batch of 2"):
        item_seeds([1, 2, 3], 2)
