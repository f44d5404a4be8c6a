"""The training script: its target agrees with the Denoiser's reading of v, it logs, exports and resumes."""
import json

import torch

from diffusion_blocks.networks import Denoiser, load_text_encoder, load_unet
from diffusion_blocks.training import train


class ExactV(torch.nn.Module):
    """A 'network' that answers the v target of training for a known clean image, and notes the timesteps it got."""

    def __init__(self, images, noise, alphas_cumprod):
        super().__init__()
        self.images, self.noise, self.alphas_cumprod, self.seen = images, noise, alphas_cumprod, []

    def forward(self, x_in, t, context=None, y=None):
        self.seen.append(t)
        ab = self.alphas_cumprod[t.round().long()][:, None, None, None]
        return train.forward_process(self.images, self.noise, ab)[1]


def test_the_training_target_is_what_the_denoiser_reads_as_v():
    torch.manual_seed(0)
    images, noise = torch.rand(3, 3, 8, 8) * 2 - 1, torch.randn(3, 3, 8, 8)
    schedule = train.SPEC.schedule()
    alphas_cumprod = 1 / (1 + schedule.sigmas.double() ** 2)
    t = torch.tensor([0, 400, 999])
    ab = alphas_cumprod[t][:, None, None, None]
    noisy, _ = train.forward_process(images.double(), noise.double(), ab)
    network = ExactV(images.double(), noise.double(), alphas_cumprod)
    denoiser = Denoiser(network, train.SPEC)
    x = (noisy / ab.sqrt()).float()  # the variance-exploding form samplers work in
    denoised = denoiser(x.double(), schedule.sigmas[t])
    torch.testing.assert_close(network.seen[0].double(), t.double(), atol=1e-3, rtol=0)
    torch.testing.assert_close(denoised.double(), images.double(), atol=1e-4, rtol=0)


def test_a_tiny_run_logs_exports_and_resumes(tmp_path, capsys):
    arguments = ["--work", str(tmp_path), "--batch", "2", "--chunk", "4", "--device", "cpu", "--log-every", "1",
                 "--warmup", "1"]
    train.main([*arguments, "--steps", "2"])
    log = [json.loads(line) for line in (tmp_path / "loss.log").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2] and all(entry["loss"] > 0 for entry in log)
    path = tmp_path / "model.safetensors"
    assert load_unet(path).family == "small" and load_text_encoder(path).family.name == "small"
    train.main([*arguments, "--steps", "3"])
    assert "resumed at step 2 of 3" in capsys.readouterr().out
    assert [json.loads(line)["step"] for line in (tmp_path / "loss.log").read_text().splitlines()] == [1, 2, 3]
