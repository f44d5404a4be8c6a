"""A schedule split over two runs, the second going on from the first's part-way record, gives the one run over the
whole schedule, for every sampler of the registry, on an exact problem (a Gaussian mixture's closed-form denoiser)."""
import pytest
import torch

from diffusion_blocks.devtools.gmm import GaussianMixture
from diffusion_blocks.pipeline import sample
from diffusion_blocks.samplers import SAMPLER_SPECS
from diffusion_blocks.schedules import get_sigmas

SIGMAS = get_sigmas("karras", 8, sigma_min=0.03, sigma_max=10.0).float()
SPLIT, SEED = 4, 5


@pytest.mark.parametrize("name", sorted(SAMPLER_SPECS))
def test_two_halves_give_the_whole_run(name):
    fn, latent = SAMPLER_SPECS[name].fn, torch.zeros(2, 4)
    whole = sample(fn, GaussianMixture(dim=4), latent, SIGMAS, SEED).samples
    first = sample(fn, GaussianMixture(dim=4), latent, SIGMAS[:SPLIT + 1], SEED)
    record = first.part_way(first.samples)
    assert record is not None and record.continues(first.samples, SIGMAS[SPLIT:])
    model = GaussianMixture(dim=4)
    steps = []
    second = sample(fn, model, first.samples, SIGMAS[SPLIT:], seed=999, resume=record, callback=steps.append)
    torch.testing.assert_close(second.samples, whole, rtol=0, atol=1e-6)
    if name not in ("dpm_fast", "dpm_adaptive", "restart"):  # their steps are not the schedule's
        assert [s["i"] for s in steps] == list(range(len(SIGMAS) - 1 - SPLIT))  # only its own steps are shown
    fresh = sample(fn, GaussianMixture(dim=4), first.samples, SIGMAS[SPLIT:], SEED).samples  # image-to-image instead
    assert (fresh - whole).abs().max() > 1e-2


def test_the_second_half_replays_the_first_without_calling_the_model():
    fn = SAMPLER_SPECS["dpmpp_2m_sde"].fn
    first = sample(fn, GaussianMixture(dim=4), torch.zeros(1, 4), SIGMAS[:SPLIT + 1], SEED)
    model = GaussianMixture(dim=4)
    sample(fn, model, first.samples, SIGMAS[SPLIT:], SEED, resume=first.part_way(first.samples))
    assert model.calls == len(SIGMAS) - 1 - SPLIT


def test_a_record_continues_only_its_own_samples_at_its_own_sigma():
    first = sample(SAMPLER_SPECS["euler_ancestral"].fn, GaussianMixture(dim=4), torch.zeros(1, 4), SIGMAS[:SPLIT + 1], 1)
    record = first.part_way(first.samples)
    assert record.continues(first.samples.clone(), SIGMAS[SPLIT:])
    assert not record.continues(first.samples * 0.5, SIGMAS[SPLIT:])
    assert not record.continues(first.samples, SIGMAS[SPLIT + 1:])
    assert not record.continues(first.samples.double(), SIGMAS[SPLIT:])


def test_a_run_down_to_zero_leaves_no_record():
    done = sample(SAMPLER_SPECS["euler"].fn, GaussianMixture(dim=4), torch.zeros(1, 4), SIGMAS, 1)
    assert done.part_way(done.samples) is None


def test_another_sampler_goes_on_from_the_samples_with_the_noise_stream_where_the_first_left_it():
    """euler_ancestral takes the start draw and one draw per step; dpmpp_2m_sde then starts from its samples (no
    noise added) and draws on from there."""
    from diffusion_blocks.samplers.common import NoiseStream

    latent = torch.zeros(2, 4)
    first = sample(SAMPLER_SPECS["euler_ancestral"].fn, GaussianMixture(dim=4), latent, SIGMAS[:SPLIT + 1], [3, 8])
    second = sample(SAMPLER_SPECS["dpmpp_2m_sde"].fn, GaussianMixture(dim=4), first.samples, SIGMAS[SPLIT:], 0,
                    resume=first.part_way(first.samples)).samples
    by_hand = SAMPLER_SPECS["dpmpp_2m_sde"].fn(GaussianMixture(dim=4), first.samples, SIGMAS[SPLIT:],
                                               noise_sampler=NoiseStream.resumed((2, 4), [3, 8], 1 + SPLIT))
    torch.testing.assert_close(second, by_hand, rtol=0, atol=0)
