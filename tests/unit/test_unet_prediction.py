"""Prediction wrappers: eps / v / x0 networks as exact denoisers, batched classifier-free guidance and its rescaling."""
import pytest
import torch

from diffusion_blocks.networks.prediction import Cond, Denoiser, TrainingSpec, preconditioning
from diffusion_blocks.networks.unet import UNet, UNetConfig

SIGMAS = torch.tensor([0.0292, 1.0, 14.6])


class Oracle(torch.nn.Module):
    """A network that knows the clean sample and the noise, and answers with the quantity it was trained on."""

    def __init__(self, x0, noise, prediction, schedule):
        super().__init__()
        self.x0, self.noise, self.prediction, self.schedule = x0, noise, prediction, schedule
        self.calls = []

    def forward(self, x_in, t, context=None, y=None):
        self.calls.append((x_in, t, context, y))
        sigma = self.schedule.sigma(t)[:, None, None, None]
        alpha, s = 1 / (sigma**2 + 1).sqrt(), sigma / (sigma**2 + 1).sqrt()  # x_t = alpha x0 + s eps (VP form)
        assert torch.allclose(x_in, alpha * self.x0 + s * self.noise, atol=1e-5)
        return {"eps": self.noise, "v": alpha * self.noise - s * self.x0, "x0": self.x0}[self.prediction]


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_an_exact_network_gives_the_exact_clean_sample(prediction):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    spec = TrainingSpec(prediction=prediction)
    oracle = Oracle(x0, noise, prediction, spec.schedule())
    denoiser = Denoiser(oracle, spec)
    x = x0 + SIGMAS[:, None, None, None] * noise  # the variance-exploding form the samplers use
    assert torch.allclose(denoiser(x, SIGMAS), x0, atol=1e-5)
    (_, t, _, _), = oracle.calls
    assert torch.allclose(t, spec.schedule().timestep(SIGMAS))


def test_preconditioning_coefficients_are_karras_table_1():
    sigma = torch.tensor([0.5, 2.0], dtype=torch.float64)
    c_skip, c_out, c_in = preconditioning(sigma, "v")
    assert torch.allclose(c_skip, 1 / (sigma**2 + 1)) and torch.allclose(c_out, -sigma / (sigma**2 + 1).sqrt())
    assert torch.allclose(c_in, 1 / (sigma**2 + 1).sqrt())
    assert torch.equal(preconditioning(sigma, "eps")[1], -sigma)


def small_unet(seed=0):
    torch.manual_seed(seed)
    config = UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1), transformer_depth=(1, 1),
                        transformer_depth_output=(1, 1, 1, 1), context_dim=16, num_heads=2)
    return UNet(config).eval()


class Counting(torch.nn.Module):
    def __init__(self, network):
        super().__init__()
        self.network, self.batches = network, []

    def forward(self, x, t, context=None, y=None):
        self.batches.append(x.shape[0])
        return self.network(x, t, context, y)


def test_guidance_is_one_batched_call_equal_to_two_separate_ones():
    g = torch.Generator().manual_seed(1)
    network = Counting(small_unet())
    denoiser = Denoiser(network, TrainingSpec())
    x, sigma = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([3.0, 0.5])
    cond, uncond = torch.randn(1, 77, 16, generator=g), torch.randn(1, 154, 16, generator=g)  # a long negative prompt
    with torch.no_grad():
        guided = denoiser(x, sigma, cond, uncond, cfg=7.5)
        assert network.batches == [4]
        positive, negative = denoiser(x, sigma, cond), denoiser(x, sigma, Cond(uncond))
    assert torch.allclose(guided, negative + 7.5 * (positive - negative), atol=1e-4)
    with torch.no_grad():
        assert torch.equal(denoiser(x, sigma, cond, uncond, cfg=1.0), positive)  # cfg 1: one unguided call


def test_guidance_rescale_matches_the_paper_in_v_space():
    g = torch.Generator().manual_seed(2)
    denoiser = Denoiser(small_unet(), TrainingSpec(prediction="v"))
    x, sigma = torch.randn(2, 4, 8, 8, generator=g) * 5, torch.tensor([4.0, 0.7])
    cond, uncond = torch.randn(2, 7, 16, generator=g), torch.randn(2, 7, 16, generator=g)
    with torch.no_grad():
        v_pos, v_neg = (denoiser.network(x / (sigma**2 + 1).sqrt()[:, None, None, None],
                                         denoiser.schedule.timestep(sigma), c) for c in (cond, uncond))
        plain = denoiser(x, sigma, cond, uncond, cfg=6.0)
        assert torch.allclose(denoiser(x, sigma, cond, uncond, cfg=6.0, cfg_rescale=0.0), plain)
        result = denoiser(x, sigma, cond, uncond, cfg=6.0, cfg_rescale=0.7)
    # Lin et al. 2024, eq. 15-17, on the v-prediction itself, turned into x0.
    v_cfg = v_neg + 6.0 * (v_pos - v_neg)
    v_rescaled = v_cfg * v_pos.std(dim=(1, 2, 3), keepdim=True) / v_cfg.std(dim=(1, 2, 3), keepdim=True)
    v = 0.7 * v_rescaled + 0.3 * v_cfg
    s = sigma[:, None, None, None]
    expected = x / (s**2 + 1) - s / (s**2 + 1).sqrt() * v
    assert torch.allclose(result, expected, atol=1e-4)
    assert not torch.allclose(result, plain, atol=1e-3)


def test_conditioning_of_batch_one_is_shared_and_mismatches_are_named():
    denoiser = Denoiser(small_unet(), TrainingSpec())
    x = torch.randn(3, 4, 8, 8)
    context = torch.randn(1, 5, 16)
    with torch.no_grad():
        shared = denoiser(x, 1.0, context)
        assert torch.allclose(shared, denoiser(x, 1.0, context.expand(3, -1, -1)))
    with pytest.raises(ValueError, match="of batch 2 cannot be shared by a batch of 3"):
        denoiser(x, 1.0, torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match="same parts"):
        denoiser(x, 1.0, Cond(context, torch.zeros(1, 4)), Cond(context), cfg=2.0)


def test_zero_terminal_snr_spec_reaches_a_huge_sigma_and_stays_finite():
    spec = TrainingSpec(prediction="v", zero_snr=True)
    schedule = spec.schedule()
    assert schedule.sigma_max > 1000
    denoiser = Denoiser(small_unet(), spec)
    with torch.no_grad():
        out = denoiser(torch.randn(1, 4, 8, 8) * schedule.sigma_max, schedule.sigma_max, torch.randn(1, 3, 16))
    assert torch.isfinite(out).all()


def test_the_denoiser_drives_a_sampler():
    from diffusion_blocks.samplers import SAMPLERS
    from diffusion_blocks.schedules import get_sigmas

    denoiser = Denoiser(small_unet(), TrainingSpec())
    sigmas = get_sigmas("karras", 3, model=denoiser.schedule)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)) * sigmas[0]
    extra = {"cond": torch.randn(1, 4, 16), "uncond": torch.zeros(1, 4, 16), "cfg": 4.0}
    with torch.no_grad():
        out = SAMPLERS["dpmpp_2m"](denoiser, x, sigmas, extra_args=extra, disable=True)
    assert out.shape == x.shape and torch.isfinite(out).all()
