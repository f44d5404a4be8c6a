"""Prediction wrappers checked against published tables and independent maths, never against their own formulas.

References: Karras et al. 2022 ("EDM"), Table 1; Salimans & Ho 2022 (v-prediction), sec. 4 and appendix D;
Ho et al. 2020 (DDPM), eq. 4 and 15, as diffusers' DDPMScheduler implements them; Lin et al. 2024 (guidance
rescale), as diffusers' rescale_noise_cfg implements it.
"""
import math

import pytest
import torch

from diffusion_blocks.networks.prediction import Cond, Denoiser, TrainingSpec, preconditioning
from diffusion_blocks.networks.unet import UNet, UNetConfig

diffusers = pytest.importorskip("diffusers")

# Stable Diffusion's training schedule, as diffusers builds it (independent of schedules/).
SD_BETAS = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000}
TIMESTEPS = torch.tensor([0, 250, 999])


def ddpm(prediction_type="epsilon", **options):
    return diffusers.DDPMScheduler(**SD_BETAS, prediction_type=prediction_type, clip_sample=False, **options)


def sd_sigmas(timesteps=TIMESTEPS):
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) from diffusers' alphas_cumprod (Karras 2022, tab. 1, VP)."""
    alpha_bar = ddpm().alphas_cumprod.double()[timesteps]
    return ((1 - alpha_bar) / alpha_bar).sqrt()


# ---- the preconditioning table ----------------------------------------------------------------------
#
# D(x, sigma) = c_skip x + c_out F(c_in x, t) with x = x0 + sigma eps (EDM eq. 7).
# eps: EDM Table 1, "VP" column: c_skip = 1, c_out = -sigma, c_in = 1 / sqrt(sigma^2 + 1).
# v:   EDM Table 1, "EDM" column with sigma_data = 1: c_skip = 1 / (sigma^2 + 1), c_out = sigma / sqrt(sigma^2 + 1),
#      c_in = 1 / sqrt(sigma^2 + 1); its training target F = (x0 - c_skip x) / c_out = s x0 - alpha eps, which is
#      -v for Salimans & Ho's v = alpha eps - s x0 (alpha = 1 / sqrt(1 + sigma^2), s = sigma alpha), so a v network
#      takes c_out = -sigma / sqrt(sigma^2 + 1). Equivalently x0 = alpha z - s v (Salimans & Ho, app. D) with
#      z = alpha x the network's input.
# x0:  the output is the estimate: c_skip = 0, c_out = 1; the input scaled as for the VP networks.
TABLE = {  # sigma: {prediction: (c_skip, c_out, c_in)} at sigmas where the table's numbers are exact
    0.0: {"eps": (1, 0, 1), "v": (1, 0, 1), "x0": (0, 1, 1)},
    1.0: {"eps": (1, -1, 1 / math.sqrt(2)), "v": (0.5, -1 / math.sqrt(2), 1 / math.sqrt(2)), "x0": (0, 1, 1 / math.sqrt(2))},
    3.0: {"eps": (1, -3, 1 / math.sqrt(10)), "v": (0.1, -3 / math.sqrt(10), 1 / math.sqrt(10)), "x0": (0, 1, 1 / math.sqrt(10))},
}


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_preconditioning_is_edm_table_1(prediction):
    sigma = torch.tensor(list(TABLE), dtype=torch.float64)
    expected = torch.tensor([TABLE[s][prediction] for s in TABLE], dtype=torch.float64).T
    for name, value, reference in zip(("c_skip", "c_out", "c_in"), preconditioning(sigma, prediction), expected):
        torch.testing.assert_close(value, reference, rtol=1e-12, atol=1e-12, msg=lambda m: f"{name}: {m}")


def test_preconditioning_follows_the_edm_column_at_any_sigma():
    sigma = torch.logspace(-2, 3, 50, dtype=torch.float64)
    sigma_data = 1.0
    edm_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    edm_out = sigma * sigma_data / (sigma**2 + sigma_data**2).sqrt()
    edm_in = 1 / (sigma**2 + sigma_data**2).sqrt()
    for value, reference in zip(preconditioning(sigma, "v"), (edm_skip, -edm_out, edm_in)):
        torch.testing.assert_close(value, reference, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="prediction must be one of eps, v, x0"):
        preconditioning(sigma, "epsilon")


# ---- exact round trips ------------------------------------------------------------------------------


class Oracle(torch.nn.Module):
    """A network that knows the clean sample and the noise and answers with the exact quantity it was trained on.

    It is told the noise level of each batch item, checks that it is called with the VP sample
    alpha x0 + s eps (Ho et al. 2020, eq. 4) at the expected training timestep, and returns eps, v or x0.
    """

    def __init__(self, x0, noise, sigma, timesteps, prediction):
        super().__init__()
        self.x0, self.noise, self.prediction = x0, noise, prediction
        self.sigma, self.timesteps = sigma.double()[:, None, None, None], timesteps.double()

    def forward(self, x_in, t, context=None, y=None):
        torch.testing.assert_close(t.double(), self.timesteps, rtol=0, atol=1e-3)
        alpha = 1 / (1 + self.sigma**2).sqrt()
        s = self.sigma * alpha
        torch.testing.assert_close(x_in.double(), alpha * self.x0 + s * self.noise, rtol=1e-5, atol=1e-5)
        target = {"eps": self.noise, "v": alpha * self.noise - s * self.x0, "x0": self.x0}[self.prediction]
        return target.to(x_in.dtype)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_an_exact_network_gives_the_exact_clean_sample(prediction):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64), torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64)
    sigma = sd_sigmas()
    x = x0 + sigma[:, None, None, None] * noise  # the variance-exploding form the samplers use
    denoiser = Denoiser(Oracle(x0, noise, sigma, TIMESTEPS, prediction), TrainingSpec(prediction=prediction))
    torch.testing.assert_close(denoiser(x.float(), sigma.float()).double(), x0, rtol=0, atol=1e-5)


@pytest.mark.parametrize("prediction, diffusers_name", [("eps", "epsilon"), ("v", "v_prediction"), ("x0", "sample")])
def test_the_clean_sample_is_diffusers_pred_original_sample(prediction, diffusers_name):
    """Any network output F: our D(x_t / alpha_t, sigma_t) equals DDPMScheduler's x0 from F and the VP sample x_t."""
    g = torch.Generator().manual_seed(1)
    timesteps = torch.tensor([10, 500, 990])
    x_t, output = torch.randn(3, 4, 6, 6, generator=g), torch.randn(3, 4, 6, 6, generator=g)
    scheduler = ddpm(diffusers_name)
    expected = torch.stack([scheduler.step(output[i:i + 1], int(t), x_t[i:i + 1]).pred_original_sample[0]
                            for i, t in enumerate(timesteps)])
    seen = []

    def network(x_in, t, context=None, y=None):
        seen.append((x_in, t))
        return output

    sigma = sd_sigmas(timesteps).float()
    alpha = 1 / (1 + sigma**2).sqrt()[:, None, None, None]
    result = Denoiser(network, TrainingSpec(prediction=prediction))(x_t / alpha, sigma)
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-4)
    (x_in, t), = seen
    torch.testing.assert_close(x_in, x_t, rtol=1e-5, atol=1e-5)  # the network sees what diffusers feeds its U-Net
    torch.testing.assert_close(t, timesteps.float(), rtol=0, atol=1e-3)


def test_zero_terminal_snr_reaches_diffusers_last_step_and_stays_exact():
    """Lin et al. 2024: alpha_bar_T = 0; diffusers' Euler scheduler clamps it to 2^-24, so sigma_max = sqrt(2^24 - 1)."""
    spec = TrainingSpec(prediction="v", zero_snr=True)
    euler = diffusers.EulerDiscreteScheduler(**SD_BETAS, prediction_type="v_prediction", rescale_betas_zero_snr=True)
    torch.testing.assert_close(spec.schedule().sigmas, euler.sigmas[:-1].flip(0).float(), rtol=1e-4, atol=0)
    sigma_max = spec.schedule().sigma_max
    assert sigma_max == pytest.approx(math.sqrt(2**24 - 1), rel=1e-6)
    g = torch.Generator().manual_seed(4)
    x0, noise = torch.randn(1, 4, 5, 5, generator=g, dtype=torch.float64), torch.randn(1, 4, 5, 5, generator=g, dtype=torch.float64)
    sigma = torch.tensor([sigma_max], dtype=torch.float64)
    denoiser = Denoiser(Oracle(x0, noise, sigma, torch.tensor([999]), "v"), spec)
    torch.testing.assert_close(denoiser((x0 + sigma_max * noise).float(), sigma_max).double(), x0, rtol=0, atol=1e-4)


def test_the_denoiser_drives_a_sampler_to_the_exact_clean_sample():
    """With the true noise as the eps answer, D is x0 all along the path x0 + sigma eps, where DPM-Solver++(2M)
    is exact (Lu et al. 2022: the exponential integrator of a constant data prediction), so it lands on x0."""
    from diffusion_blocks.samplers import SAMPLERS
    from diffusion_blocks.schedules import get_sigmas

    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    denoiser = Denoiser(lambda x_in, t, context=None, y=None: noise.expand_as(x_in), TrainingSpec())
    sigmas = get_sigmas("karras", 5, model=denoiser.schedule)
    out = SAMPLERS["dpmpp_2m"](denoiser, x0 + sigmas[0] * noise, sigmas, disable=True)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-4)


# ---- guidance -----------------------------------------------------------------------------------------


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


def test_guidance_rescale_is_diffusers_rescale_noise_cfg_in_v_space():
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

    g = torch.Generator().manual_seed(2)
    denoiser = Denoiser(small_unet(), TrainingSpec(prediction="v"))
    timesteps = torch.tensor([700, 120])
    sigma = sd_sigmas(timesteps).float()
    alpha = 1 / (1 + sigma**2).sqrt()[:, None, None, None]
    x_t = torch.randn(2, 4, 8, 8, generator=g)
    cond, uncond = torch.randn(2, 7, 16, generator=g), torch.randn(2, 7, 16, generator=g)
    with torch.no_grad():
        v_pos, v_neg = (denoiser.network(x_t, timesteps.float(), c) for c in (cond, uncond))
        plain = denoiser(x_t / alpha, sigma, cond, uncond, cfg=6.0)
        torch.testing.assert_close(denoiser(x_t / alpha, sigma, cond, uncond, cfg=6.0, cfg_rescale=0.0), plain)
        result = denoiser(x_t / alpha, sigma, cond, uncond, cfg=6.0, cfg_rescale=0.7)
    # diffusers' pipeline: guide the v predictions, rescale them, then DDPM's x0 from v.
    v = rescale_noise_cfg(v_neg + 6.0 * (v_pos - v_neg), v_pos, guidance_rescale=0.7)
    scheduler = ddpm("v_prediction")
    expected = torch.cat([scheduler.step(v[i:i + 1], int(t), x_t[i:i + 1]).pred_original_sample for i, t in enumerate(timesteps)])
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-4)
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
