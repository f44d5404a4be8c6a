"""The one pipeline: per-item seeds (a batch is its single images), the noisy start, latent units, noise prediction.
Exact answers on the Gaussian-mixture denoiser and an oracle denoiser; the bundled model for text to image."""
import pytest
import torch

from diffusion_blocks.networks import load_text_encoder, load_unet
from diffusion_blocks.networks.families import FAMILIES
from diffusion_blocks.pipeline import generate, predict_noise, sample, start_noise, text_to_image
from diffusion_blocks.samplers import SAMPLER_SPECS, SAMPLERS
from diffusion_blocks.devtools.gmm import GaussianMixture
from diffusion_blocks.devtools.paths import PACK_ROOT

STOCHASTIC = sorted(name for name, spec in SAMPLER_SPECS.items() if spec.stochastic)
SIGMAS = torch.tensor([14.6, 4.0, 1.2, 0.3, 0.0], dtype=torch.float64)
BUNDLED = PACK_ROOT / "models" / "diffusion_blocks_shapes.safetensors"


def test_item_k_of_a_batch_is_the_single_noise_of_seed_plus_k():
    batch = start_noise((3, 2, 4, 4), 10)
    for k in range(3):
        single = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(10 + k))
        assert torch.equal(batch[k:k + 1], single)
    assert torch.equal(start_noise((2, 5), [7, 3])[1], start_noise((1, 5), 3)[0])
    assert torch.equal(start_noise((2, 5), torch.tensor([4, 9])), start_noise((2, 5), [4, 9]))
    with pytest.raises(ValueError, match="seed: got 2 seeds for a batch of 3"):
        start_noise((3, 5), [1, 2])


@pytest.mark.parametrize("name", STOCHASTIC)
def test_a_batch_of_a_stochastic_sampler_equals_its_single_runs(name):
    """The start noise and the sampler's own noise are both drawn per item, so the batch changes nothing."""
    model = GaussianMixture(dim=4)
    latent = torch.zeros(3, 4, dtype=torch.float64)
    batch = sample(SAMPLERS[name], model, latent, SIGMAS, 21).samples
    for k, seed in enumerate((21, 22, 23)):
        single = sample(SAMPLERS[name], model, latent[:1], SIGMAS, seed).samples
        torch.testing.assert_close(batch[k:k + 1], single, rtol=1e-6, atol=1e-6)
    listed = sample(SAMPLERS[name], model, latent[:2], SIGMAS, [23, 21]).samples
    torch.testing.assert_close(listed, batch[[2, 0]], rtol=1e-6, atol=1e-6)


class Oracle:
    """A denoiser that knows the answer: D(x, sigma) = target, whatever x (network units)."""

    def __init__(self, family, target):
        self.family, self.target = FAMILIES[family], target

    def __call__(self, x, sigma, cond=None, uncond=None, cfg=1.0):
        return self.target.to(x)


def test_generate_takes_and_gives_latents_in_the_familys_units():
    """Euler down to sigma 0 lands on the denoiser's answer; SD latents come back divided by the VAE scale."""
    target = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    latent = torch.zeros(1, 4, 8, 8)
    out = generate(Oracle("sd1", target), SAMPLERS["euler"], SIGMAS.float(), latent, 0)
    torch.testing.assert_close(out.samples, target / 0.18215)
    torch.testing.assert_close(out.denoised, target / 0.18215)


def test_predict_noise_of_a_perfect_denoiser_is_the_added_noise():
    clean = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    seen = predict_noise(Oracle("small", clean), clean, 2.5, seed=4)
    torch.testing.assert_close(seen.noisy, clean + 2.5 * start_noise(clean.shape, 4))
    torch.testing.assert_close(seen.noise, start_noise(clean.shape, 4), rtol=1e-5, atol=1e-5)
    assert torch.equal(predict_noise(Oracle("small", clean), clean, 0.0, seed=4).noise, torch.zeros_like(clean))


def test_text_to_image_of_a_batch_equals_its_single_pictures_with_a_stochastic_sampler():
    unet, encoder = load_unet(BUNDLED), load_text_encoder(BUNDLED)
    prompts = ["a red circle on a white background", "a blue star on a black background"]
    batch = text_to_image(unet, encoder, prompts, [5, 9], steps=3, sampler="euler_ancestral")
    for k, seed in enumerate((5, 9)):
        single = text_to_image(unet, encoder, prompts[k:k + 1], [seed], steps=3, sampler="euler_ancestral")
        assert (batch[k:k + 1].int() - single.int()).abs().max() <= 1
    assert not torch.equal(batch[0], batch[1])
