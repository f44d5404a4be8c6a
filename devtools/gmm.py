"""An exact test problem: Gaussian-mixture data, whose ideal denoiser E[x0 | x] is closed-form."""
import math

import torch


class GaussianMixture:
    """p(x0) = sum_k w_k N(mu_k, s_k^2 I); the denoiser D(x, sigma) = E[x0 | x0 + sigma * eps = x] exactly."""

    def __init__(self, dim=4, components=3, seed=0, dtype=torch.float64):
        g = torch.Generator().manual_seed(seed)
        self.means = torch.randn(components, dim, generator=g, dtype=dtype) * 2.0
        self.stds = 0.3 + 0.4 * torch.rand(components, generator=g, dtype=dtype)
        self.weights = torch.softmax(torch.randn(components, generator=g, dtype=dtype), 0)
        self.calls = 0

    def __call__(self, x, sigma, **extra_args):
        """Posterior mean over the components; x is (B, dim) or (B, C, H, W) flattened to dim."""
        self.calls += 1
        shape, dtype = x.shape, x.dtype
        flat = x.reshape(shape[0], -1).to(self.means.dtype)
        sigma = torch.as_tensor(sigma, dtype=flat.dtype).reshape(-1)
        sigma = sigma.expand(shape[0]) if sigma.numel() == 1 else sigma
        var = self.stds[None, :] ** 2 + sigma[:, None] ** 2  # (B, K)
        dist2 = ((flat[:, None, :] - self.means[None]) ** 2).sum(-1)  # (B, K)
        dim = flat.shape[1]
        log_r = torch.log(self.weights)[None] - 0.5 * dist2 / var - 0.5 * dim * torch.log(var)
        r = torch.softmax(log_r, dim=1)
        gain = (self.stds[None, :] ** 2 / var)[..., None]  # (B, K, 1)
        component_means = self.means[None] + gain * (flat[:, None, :] - self.means[None])
        return (r[..., None] * component_means).sum(1).reshape(shape).to(dtype)

    def sample_prior(self, batch, sigma_max, seed=1):
        """Start points x_T ~ N(0, (s^2 + sigma_max^2) I) around the data: noise scaled to sigma_max."""
        g = torch.Generator().manual_seed(seed)
        return torch.randn(batch, self.means.shape[1], generator=g, dtype=self.means.dtype) * sigma_max


def reference_solution(denoiser, x, sigma_from, sigma_to, steps=4000):
    """Probability-flow ODE dx/dsigma = (x - D) / sigma solved by classical RK4 in log-sigma, very finely."""
    log_from, log_to = math.log(sigma_from), math.log(sigma_to)
    h = (log_to - log_from) / steps

    def f(x, log_sigma):  # dx/dlog(sigma) = x - D(x, sigma)
        sigma = torch.full((x.shape[0],), math.exp(log_sigma), dtype=x.dtype)
        return x - denoiser(x, sigma)

    t = log_from
    for _ in range(steps):
        k1 = f(x, t)
        k2 = f(x + 0.5 * h * k1, t + 0.5 * h)
        k3 = f(x + 0.5 * h * k2, t + 0.5 * h)
        k4 = f(x + h * k3, t + h)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        t += h
    return x
