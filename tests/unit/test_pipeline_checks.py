"""Nothing silent: a NaN or infinite network output is an error naming its likeliest cause (a first sigma of 0, cfg, a
prompt weight, NaN weights in the named file), schedules check what they make, and Plot Sigmas refuses inf cleanly.
Each failing case has a passing twin that differs only in the input at fault."""
import math

import pytest
import torch

from diffusion_blocks.networks.prediction import Cond, Denoiser, TrainingSpec
from diffusion_blocks.networks.unet import UNet, UNetConfig
from diffusion_blocks.networks.unet_loading import load_unet, save_unet
from diffusion_blocks.pipeline import generate, predict_noise
from diffusion_blocks.samplers import SAMPLERS
from diffusion_blocks.schedules import get_sigmas
from diffusion_blocks.schedules.validation import check_schedule_output
from diffusion_blocks.views.plot import plot_sigmas

TINY = UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1),
                  transformer_depth=(0, 1), transformer_depth_output=(1, 1, 0, 0), context_dim=64, num_heads=-1,
                  head_channels=32)
SIGMAS = torch.tensor([14.6, 1.2, 0.0])
LATENT = torch.zeros(1, 3, 8, 8)


def random_unet(seed=0):
    """The small family's U-Net scaled down, every parameter random (so its output depends on all of them)."""
    torch.manual_seed(seed)
    unet = UNet(TINY).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / max(parameter[0].numel(), 1) ** 0.5)
    return unet


@pytest.fixture(scope="module")
def denoiser():
    return Denoiser(random_unet(), TrainingSpec(latent_scale=1.0))


def text(scale=1.0):
    return Cond(scale * torch.randn(1, 5, 64, generator=torch.Generator().manual_seed(1)))


class Counting:
    """A denoiser wrapper counting network calls."""

    def __init__(self, denoiser):
        self.denoiser, self.calls = denoiser, 0

    @property
    def family(self):
        return self.denoiser.family

    @property
    def network(self):
        return self.denoiser.network

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.denoiser(*args, **kwargs)


def run(denoiser, sigmas=SIGMAS, cond=None, uncond=None, cfg=1.0, latent=LATENT):
    return generate(denoiser, SAMPLERS["euler"], sigmas, latent, 0, cond=cond, uncond=uncond, cfg=cfg)


def test_the_passing_twin_runs_and_is_finite(denoiser):
    out = run(denoiser, cond=text(), uncond=text(0.0), cfg=3.0)
    assert torch.isfinite(out.samples).all() and torch.isfinite(out.denoised).all()


def test_a_schedule_that_starts_at_zero_is_named(denoiser):
    """Set First Sigma 0 feeding Sample made an all-black picture: euler divides by the first sigma."""
    sigmas = SIGMAS.clone()
    sigmas[0] = 0.0
    with pytest.raises(ValueError, match=r"^sigmas: the schedule starts at noise level 0 \(a Set First Sigma of 0\?\)"):
        run(denoiser, sigmas=sigmas, cond=text())


def test_a_non_finite_cfg_is_refused_before_the_network_runs(denoiser):
    counting = Counting(denoiser)
    for cfg in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match=rf"^cfg: expected a finite number, got {cfg}$"):
            run(counting, cond=text(), uncond=text(0.0), cfg=cfg)
    assert counting.calls == 0


@pytest.mark.parametrize("which", ["positive", "negative"])
def test_a_prompt_weight_of_1e30_is_named_with_its_size(denoiser, which):
    absurd = {"positive": (text(-1e30), text(0.0)), "negative": (text(), text(1e30))}[which]
    largest = f"{float(absurd[0 if which == 'positive' else 1].context.abs().max()):.0e}".replace("e+", "e")
    with pytest.raises(ValueError, match=rf"^{which}: the conditioning holds values up to {largest}, .*prompt weight"):
        run(denoiser, cond=absurd[0], uncond=absurd[1], cfg=3.0)


def test_a_nan_in_the_conditioning_or_the_latent_is_named(denoiser):
    nan_text = text()
    nan_text.context[0, 2, 3] = math.nan
    with pytest.raises(ValueError, match="^positive: the conditioning holds NaN or infinite values$"):
        run(denoiser, cond=nan_text)
    latent = LATENT.clone()
    latent[0, 1, 2, 2] = math.inf
    with pytest.raises(ValueError, match="^latent: holds NaN or infinite values$"):
        run(denoiser, cond=text(), latent=latent)


def test_nan_weights_name_the_file_and_no_folder(tmp_path):
    broken = random_unet(1)
    with torch.no_grad():
        broken.out[2].weight[0, 0, 0, 0] = math.nan
    path = save_unet(broken, tmp_path / "broken.safetensors", TrainingSpec(latent_scale=1.0))
    loaded = load_unet(path)
    assert loaded.source_file == "broken.safetensors"
    with pytest.raises(ValueError, match=r"^unet: the weights in broken\.safetensors hold NaN") as caught:
        run(Denoiser(loaded), cond=text())
    assert str(tmp_path) not in str(caught.value)
    with pytest.raises(ValueError, match=r"^unet: the weights in broken\.safetensors hold NaN"):
        predict_noise(Denoiser(loaded), LATENT, 1.0, 0, text())


class NaNOracle:
    """A denoiser of the pixel family whose every answer is NaN, whatever its inputs: nothing to blame but itself."""

    def __init__(self, family):
        self.family, self.calls = family, 0

    def __call__(self, x, sigma, cond=None, uncond=None, cfg=1.0):
        self.calls += 1
        return torch.full_like(x, math.nan)


def test_a_nan_at_the_first_step_stops_the_run_there(denoiser):
    oracle = NaNOracle(denoiser.family)
    with pytest.raises(ValueError, match=r"^unet: the network's output .* is NaN or infinite at the first step "
                                         r"\(sigma 14\.6\), and none of its inputs looks wrong \(first sigma 14\.6, "
                                         r"cfg 1\)$"):
        run(oracle, cond=text())
    assert oracle.calls == 1  # euler's first call; the second never ran


def test_predict_noise_refuses_a_sigma_that_is_no_noise_level(denoiser):
    for sigma in (math.nan, math.inf, -1.0):
        with pytest.raises(ValueError, match=rf"^sigma: expected a finite noise level of 0 or more, got {sigma}$"):
            predict_noise(denoiser, LATENT, sigma, 0, text())
    seen = predict_noise(denoiser, LATENT, 0.0, 0, text())
    assert torch.equal(seen.noise, torch.zeros_like(seen.noise)) and torch.isfinite(seen.denoised).all()


def test_a_vp_schedule_that_overflows_names_the_option_that_did_it():
    finite = get_sigmas("vp", 10, beta_d=19.9)
    assert torch.isfinite(finite).all()
    with pytest.raises(ValueError, match=r"^beta_d: the 'vp' schedule gives infinite noise levels with beta_d=5000 "):
        get_sigmas("vp", 10, beta_d=5000.0)
    with pytest.raises(ValueError, match=r"^beta_min: the 'vp' schedule gives infinite noise levels with beta_min=50"):
        get_sigmas("vp", 10, beta_min=5000.0)


def test_a_schedule_output_must_be_finite_non_negative_and_never_rising():
    suspects = {"rho": 7.0}
    assert torch.equal(check_schedule_output(torch.tensor([2.0, 1.0, 1.0, 0.0]), "'x'", suspects),
                       torch.tensor([2.0, 1.0, 1.0, 0.0]))  # a repeated level is allowed (laplace clamps)
    with pytest.raises(ValueError, match=r"^rho: the 'x' schedule gives NaN noise levels with rho=7 "):
        check_schedule_output(torch.tensor([2.0, math.nan, 0.0]), "'x'", suspects)
    with pytest.raises(ValueError, match=r"^rho: the 'x' schedule gives negative noise levels with rho=7$"):
        check_schedule_output(torch.tensor([2.0, -1.0]), "'x'", suspects)
    with pytest.raises(ValueError, match=r"^rho: the 'x' schedule rises from 1 to 3 at step 2 with rho=7; a schedule "
                                         r"must descend$"):
        check_schedule_output(torch.tensor([2.0, 1.0, 3.0, 0.0]), "'x'", suspects)


def test_plot_sigmas_refuses_inf_by_name_and_draws_extremes():
    with pytest.raises(ValueError, match="^sigmas 2: holds NaN or infinite noise levels"):
        plot_sigmas([SIGMAS.numpy(), [math.inf, 1.0, 0.0]], ["sigmas 1", "sigmas 2"])
    for series in ([1.0, 0.0], [3e38, 1e-30, 0.0], [0.0, 0.0], [1e308, 1.0]):
        for log_scale in (True, False):
            assert plot_sigmas([series], ["s"], width=256, height=256, log_scale=log_scale).size == (256, 256)


def test_a_text_encoding_of_nan_is_blamed_on_the_encoders_weights_by_file_name():
    from diffusion_blocks.pipeline.finite import check_text_encoding

    encoder = torch.nn.Linear(2, 2)
    nan = torch.full((1, 3, 2), float("nan"))
    check_text_encoding(encoder, "clip.safetensors", nan)  # sound weights: a prompt weight's overflow, told elsewhere
    check_text_encoding(encoder, "clip.safetensors", torch.zeros(1, 3, 2))
    with torch.no_grad():
        encoder.weight[0, 0] = float("nan")
    check_text_encoding(encoder, "clip.safetensors", torch.zeros(1, 3, 2))  # a finite output is never refused
    with pytest.raises(ValueError, match="text_encoder: the weights in clip.safetensors hold NaN"):
        check_text_encoding(encoder, "clip.safetensors", nan)
