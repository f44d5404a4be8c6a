"""The U-Net's building blocks; attribute names and indices follow the latent-diffusion checkpoint layout."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import GROUPS

MAX_PERIOD = 10_000  # longest wavelength of the sinusoidal embeddings (Vaswani et al. 2017)
RES_NORM_EPS = 1e-5  # GroupNorm eps in the residual blocks and the output head
ATTENTION_NORM_EPS = 1e-6  # GroupNorm eps in front of the spatial transformers


def timestep_embedding(timesteps, dim):
    """Sinusoidal embedding of (fractional) timesteps, cosines first (Vaswani et al. 2017; Ho et al. 2020)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(MAX_PERIOD) / half * torch.arange(half, dtype=torch.float32, device=timesteps.device))
    angles = timesteps.float()[:, None] * frequencies[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    return F.pad(embedding, (0, dim % 2))


def norm(channels, eps=RES_NORM_EPS):
    return nn.GroupNorm(GROUPS, channels, eps=eps)


class ResBlock(nn.Module):
    """Residual block with the time embedding added between its two convolutions (Ho et al. 2020, app. B)."""

    def __init__(self, channels, out_channels, emb_channels, dropout=0.0):
        super().__init__()
        self.in_layers = nn.Sequential(norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(norm(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x, emb):
        h = self.in_layers(x)
        h = h + self.emb_layers(emb)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Attention(nn.Module):
    """Multi-head scaled dot-product attention; cross-attention when a context is given (Vaswani et al. 2017)."""

    def __init__(self, dim, heads, head_dim, context_dim=None):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim))

    def forward(self, x, context=None):
        context = x if context is None else context
        q, k, v = (self._split(t) for t in (self.to_q(x), self.to_k(context), self.to_v(context)))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).flatten(2))

    def _split(self, t):
        """(B, L, heads * d) -> (B, heads, L, d)."""
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)


class GEGLU(nn.Module):
    """Gated linear unit with a GELU gate (Shazeer 2020): one projection gives both halves."""

    def __init__(self, dim, inner):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x):
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """The transformer's position-wise MLP: GEGLU to 4x width, then back."""

    def __init__(self, dim, dropout=0.0, mult=4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, mult * dim), nn.Dropout(dropout), nn.Linear(mult * dim, dim))

    def forward(self, x):
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-norm transformer layer: self-attention, cross-attention to the text, feed-forward (Rombach et al. 2022, sec. 3.3)."""

    def __init__(self, dim, heads, head_dim, context_dim, dropout=0.0):
        super().__init__()
        self.attn1 = Attention(dim, heads, head_dim)
        self.attn2 = Attention(dim, heads, head_dim, context_dim)
        self.ff = FeedForward(dim, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, context):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Transformer over the pixels of a feature map, added back to it (Rombach et al. 2022, fig. 3).

    Projections in and out are 1x1 convolutions (SD1.x) or, equivalently, linear layers on the
    flattened pixels (SD2.x, SDXL).
    """

    def __init__(self, channels, heads, head_dim, depth, context_dim, linear, dropout=0.0):
        super().__init__()
        self.linear = linear
        self.norm = norm(channels, ATTENTION_NORM_EPS)
        self.proj_in = nn.Linear(channels, channels) if linear else nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(channels, heads, head_dim, context_dim, dropout) for _ in range(depth))
        self.proj_out = nn.Linear(channels, channels) if linear else nn.Conv2d(channels, channels, 1)

    def forward(self, x, context):
        height, width = x.shape[-2:]
        h = self.norm(x)
        if not self.linear:
            h = self.proj_in(h)
        h = h.flatten(2).transpose(1, 2)  # (B, H*W, C): one token per pixel
        if self.linear:
            h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, context)
        if self.linear:
            h = self.proj_out(h)
        h = h.transpose(1, 2).unflatten(2, (height, width))
        if not self.linear:
            h = self.proj_out(h)
        return x + h


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 convolution."""

    def __init__(self, channels):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to the skip connection's size (2x), then a 3x3 convolution."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, size=None):
        return self.conv(F.interpolate(x, size=size or (2 * x.shape[-2], 2 * x.shape[-1]), mode="nearest"))


class Block(nn.ModuleList):
    """One numbered block of the checkpoint layout (e.g. input_blocks.4): its layers applied in turn."""

    def forward(self, x, emb, context, size=None):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, Upsample):
                x = layer(x, size)
            else:
                x = layer(x)
        return x
