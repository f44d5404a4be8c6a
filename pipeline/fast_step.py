"""The whole guided denoiser step as one function for a FastUNet: preconditioning, one network call on the cond +
uncond batch, the classifier-free guidance combination (Ho & Salimans 2022); compiled once per shape and, on CUDA,
replayed as one CUDA graph per step.

It computes what Denoiser.forward computes (networks.prediction), with what stays the same during a sampling run
made once: the joined text conditioning, its cross-attention keys and values, the model's noise table on the device.
"""
import functools

import torch

from ..networks.prediction import Cond, as_cond, batched, joined, preconditioned
from ..networks.unet.fast import FastUNet
from ..schedules.model import table_timestep


def runs_fast(denoiser) -> bool:
    """Whether a denoiser's steps can go through the fast step: a FastUNet on a discrete noise table (any other
    denoiser, a plain callable included, runs as it is)."""
    return isinstance(getattr(denoiser, "network", None), FastUNet) and hasattr(denoiser.schedule, "log_sigmas")


def guided_denoise(network, prediction, quantize, guided, qkv, cfg, context, y, kv, log_sigmas, x, sigma):
    """The preconditioned clean estimate (networks.prediction.preconditioned) for cond and uncond in one batch,
    combined as uncond + cfg (cond - uncond) when guided."""
    if guided:
        x, sigma = torch.cat([x, x]), torch.cat([sigma, sigma])
    t = table_timestep(log_sigmas, sigma.double()).float()  # on the device: no trip to the CPU
    t = t.round() if quantize else t
    denoised = preconditioned(lambda h: network.prepared_forward(qkv, context, y, kv, h, t), x, sigma, prediction)
    if not guided:
        return denoised
    d_cond, d_uncond = denoised.chunk(2)
    return d_uncond + cfg.to(x.dtype) * (d_cond - d_uncond)


class FastGuided:
    """A Denoiser with a FastUNet and its conditioning fixed for one sampling run, called as model(x, sigma); while
    the network's layers are cast as they run (FastUNet.casts_weights), through the Denoiser and the plain path."""

    def __init__(self, denoiser, cond: Cond | None, uncond: Cond | None, cfg: float):
        self.denoiser, self.network = denoiser, denoiser.network
        self.cond, self.uncond, self.cfg = as_cond(cond), as_cond(uncond), cfg
        self.guided = uncond is not None and cfg != 1.0
        self.step = functools.partial(guided_denoise, self.network, denoiser.prediction, denoiser.quantize, self.guided)
        self.name = f"guided step ({'cond + uncond' if self.guided else 'cond'}, {denoiser.prediction})"
        self._conditioning = {}  # (batch, device) -> (cfg, context, y, log_sigmas) for this run

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        network = self.network
        if network.casts_weights():
            return self.denoiser(x, sigma, self.cond, self.uncond, self.cfg)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
        cfg, context, y, log_sigmas, addresses = self.conditioning(x)
        run_inputs = (cfg, context, y, network.text_keys_values(context), log_sigmas)
        return network.run(self.name, self.step, network.qkv_weights(), run_inputs, (x, sigma.contiguous()), addresses)

    def conditioning(self, x):
        """The run's fixed inputs for a batch like x: guidance scale, text (cond then uncond) and vector y in the
        network's dtype, the noise table, where the weights are (they stay put during a run); checked once."""
        key = (x.shape[0], x.device)
        if key not in self._conditioning:
            batch = x.shape[0]
            if self.guided:
                pairs = ((self.cond.context, self.uncond.context), (self.cond.y, self.uncond.y))
                parts = [joined(a, b, batch) for a, b in pairs]
            else:
                parts = [batched(v, batch) for v in (self.cond.context, self.cond.y)]
            calls = 2 * batch if self.guided else batch
            _, _, context, y = self.network.checked_inputs(x.new_empty((calls, *x.shape[1:])), torch.zeros(calls),
                                                           *parts)
            self._conditioning[key] = (torch.tensor(self.cfg, device=x.device), context, y,
                                       self.denoiser.schedule.log_sigmas.to(x.device), self.network.addresses())
        return self._conditioning[key]
