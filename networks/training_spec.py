"""How a network was trained: what it predicts, its noise schedule's betas and its latents' scale."""
import json
from dataclasses import asdict, dataclass

from ..schedules import ModelSchedule, rescale_zero_terminal_snr, training_betas

PREDICTIONS = ("eps", "v", "x0")


@dataclass(frozen=True)
class TrainingSpec:
    """How a network was trained: what it predicts, its betas (optionally rescaled to zero terminal SNR,
    Lin et al. 2024) and the factor its latents were scaled by (1 for pixel-space models)."""

    prediction: str = "eps"
    zero_snr: bool = False
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    timesteps: int = 1000
    latent_scale: float = 0.18215

    def __post_init__(self):
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {self.prediction!r}")
        if self.zero_snr and self.prediction == "eps":
            raise ValueError("a zero-terminal-SNR schedule needs v or x0 prediction: eps is undefined at infinite noise")

    def schedule(self):
        """The model's sigma <-> timestep table."""
        betas = training_betas(self.beta_schedule, self.timesteps, self.beta_start, self.beta_end)
        return ModelSchedule.from_betas(rescale_zero_terminal_snr(betas) if self.zero_snr else betas)

    def to_json(self):
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        return cls(**json.loads(text))
