"""Running a sampler end to end: seeded start noise, the noisy start x = latent + sigma_0 * noise, the trajectory."""
import torch


def start_noise(shape, seed, device="cpu"):
    """Standard normal noise from a CPU generator seeded with `seed`, then moved: one seed, one image on any device."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(device)


def noisy_start(latent, noise, sigma):
    """The forward process in variance-exploding form (Karras et al. 2022): x = latent + sigma * noise.

    With an empty (zero) latent this is pure noise of level sigma; with an encoded image it is image-to-image,
    the first sigma of the schedule deciding how much of the image is kept."""
    return latent + float(sigma) * noise


def evenly_spaced(count, shown):
    """`shown` indices out of `count` (0: all), evenly spread, always including the first and the last."""
    if count <= 0:
        return []
    if shown <= 0 or shown >= count:
        return list(range(count))
    if shown == 1:
        return [count - 1]
    return sorted({round(k * (count - 1) / (shown - 1)) for k in range(shown)})


class Guided:
    """A Denoiser with its conditioning fixed, in the sampler convention model(x, sigma, **extra_args): cond and
    uncond go through the network in one batched call (classifier-free guidance, Ho & Salimans 2022)."""

    def __init__(self, denoiser, cond=None, uncond=None, cfg=1.0):
        self.denoiser, self.cond, self.uncond, self.cfg = denoiser, cond, uncond, float(cfg)

    def __call__(self, x, sigma, **extra_args):
        with torch.no_grad():
            return self.denoiser(x, sigma, self.cond, self.uncond, self.cfg)


class Trajectory:
    """A sampler callback that keeps every step's noise level, noisy sample x and denoised estimate (on the CPU)."""

    def __init__(self, then=None, keep=True):
        self.then, self.keep = then, keep
        self.steps = []
        self.last_denoised = None

    def __call__(self, info):
        self.last_denoised = info["denoised"]
        if self.keep:
            self.steps.append({"i": int(info["i"]), "sigma": float(torch.as_tensor(info["sigma"]).reshape(-1)[0]),
                               "x": info["x"].detach().float().cpu(), "denoised": info["denoised"].detach().float().cpu()})
        if self.then is not None:
            self.then(info)


def sample(sampler, model, latent, sigmas, seed, extra_args=None, callback=None, options=None, record=False):
    """Run `sampler(model, x, sigmas, extra_args, callback, disable, **options)` from seeded noise added to `latent`.

    Returns (samples, denoised, trajectory): the sampler's output, the denoised estimate of its last step (the
    output itself if no step was reported) and the Trajectory (steps recorded only when `record`)."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32).reshape(-1)
    if sigmas.numel() < 2:
        raise ValueError(f"sigmas: sampling needs at least 2 noise levels (where to start and where to stop), "
                         f"got {sigmas.numel()}")
    noise = start_noise(latent.shape, seed, latent.device)
    x = noisy_start(latent, noise, sigmas[0])
    trajectory = Trajectory(callback, keep=record)
    samples = sampler(model, x, sigmas.to(latent.device), extra_args={**(extra_args or {}), "seed": seed},
                      callback=trajectory, disable=True, **(options or {}))
    denoised = samples if trajectory.last_denoised is None else trajectory.last_denoised
    return samples, denoised, trajectory
