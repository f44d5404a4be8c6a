"""The U-Net's building blocks; attribute names and indices follow the latent-diffusion checkpoint layout.

Every layer with weights is made by `operations`, a namespace of Linear, Conv2d, GroupNorm and LayerNorm classes
(torch.nn by default; a host's own, e.g. ComfyUI's comfy.ops, so its memory manager can cast and patch them).
"""
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


def norm(channels, eps=RES_NORM_EPS, operations=nn):
    return operations.GroupNorm(GROUPS, channels, eps=eps)


class ResBlock(nn.Module):
    """Residual block with the time embedding added between its two convolutions (Ho et al. 2020, app. B)."""

    def __init__(self, channels, out_channels, emb_channels, dropout=0.0, operations=nn):
        super().__init__()
        ops = operations
        self.in_layers = nn.Sequential(norm(channels, operations=ops), nn.SiLU(),
                                       ops.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), ops.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(norm(out_channels, operations=ops), nn.SiLU(), nn.Dropout(dropout),
                                        ops.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if channels == out_channels else ops.Conv2d(channels, out_channels, 1)

    def forward(self, x, emb):
        h = self.in_layers(x)
        h = h + self.emb_layers(emb)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class CrossAttention(nn.Module):
    """Multi-head scaled dot-product attention; cross-attention when a context is given (Vaswani et al. 2017)."""

    def __init__(self, dim, heads, head_dim, context_dim=None, operations=nn):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q = operations.Linear(dim, inner, bias=False)
        self.to_k = operations.Linear(context_dim or dim, inner, bias=False)
        self.to_v = operations.Linear(context_dim or dim, inner, bias=False)
        self.to_out = nn.Sequential(operations.Linear(inner, dim))

    def forward(self, x, context=None, value=None, call=None):
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context if value is None else value)
        if call is not None and call.hooks.attention is not None:
            return self.to_out(call.hooks.attention(self.attend, q, k, v, self.heads, call.site))
        return self.to_out(self.attend(q, k, v, self.heads))

    @staticmethod
    def attend(q, k, v, heads):
        """softmax(q k^T / sqrt(d)) v per head, on (B, L, heads * d) projections; k and v are viewed in q's batch, as
        ComfyUI's attention views them (a patch that tiles q alone, like HyperTile, relies on it)."""
        q, k, v = (t.reshape(q.shape[0], -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)


class GEGLU(nn.Module):
    """Gated linear unit with a GELU gate (Shazeer 2020): one projection gives both halves."""

    def __init__(self, dim, inner, operations=nn):
        super().__init__()
        self.proj = operations.Linear(dim, 2 * inner)

    def forward(self, x):
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """The transformer's position-wise MLP: GEGLU to 4x width, then back."""

    def __init__(self, dim, dropout=0.0, mult=4, operations=nn):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, mult * dim, operations), nn.Dropout(dropout),
                                 operations.Linear(mult * dim, dim))

    def forward(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-norm transformer layer: self-attention, cross-attention to the text, feed-forward (Rombach et al. 2022, sec. 3.3)."""

    def __init__(self, dim, heads, head_dim, context_dim, dropout=0.0, operations=nn):
        super().__init__()
        self.attn1 = CrossAttention(dim, heads, head_dim, operations=operations)
        self.attn2 = CrossAttention(dim, heads, head_dim, context_dim, operations)
        self.ff = FeedForward(dim, dropout, operations=operations)
        self.norm1, self.norm2, self.norm3 = (operations.LayerNorm(dim) for _ in range(3))

    def forward(self, x, context, call=None):
        if call is None:
            x = x + self.attn1(self.norm1(x))
            x = x + self.attn2(self.norm2(x), context)
            return x + self.ff(self.norm3(x))
        hooks, site = call.hooks, call.site
        site.heads, site.head_dim = self.attn1.heads, self.attn1.head_dim
        x = x + self.hooked_attention("attn1", self.norm1(x), None, call)
        for hook in hooks.after_attn1:
            x = hook(x, site)
        x = x + self.hooked_attention("attn2", self.norm2(x), context, call)
        return x + self.ff(self.norm3(x))

    def hooked_attention(self, which, n, context, call):
        """Self- (attn1) or cross-attention (attn2) of the normed tokens n with its input, replacement and output
        hooks (networks.unet.hooks)."""
        hooks, site, attention = call.hooks, call.site, getattr(self, which)
        value = None
        inputs = getattr(hooks, f"{which}_input")
        if inputs:
            context = n if context is None else context
            value = context
            for hook in inputs:
                n, context, value = hook(n, context, value, site)
        replace = hooks.replacement(which, site)
        if replace is not None:
            context = n if context is None else context
            value = context if value is None else value
            q, k, v = attention.to_q(n), attention.to_k(context), attention.to_v(value)
            n = attention.to_out(replace(q, k, v, site))
        else:
            n = attention(n, context, value, call)
        for hook in getattr(hooks, f"{which}_output"):
            n = hook(n, site)
        return n


class SpatialTransformer(nn.Module):
    """Transformer over the pixels of a feature map, added back to it (Rombach et al. 2022, fig. 3).

    Projections in and out are 1x1 convolutions (SD1.x) or, equivalently, linear layers on the
    flattened pixels (SD2.x, SDXL).
    """

    def __init__(self, channels, heads, head_dim, depth, context_dim, linear, dropout=0.0, operations=nn):
        super().__init__()
        self.linear = linear
        self.norm = norm(channels, ATTENTION_NORM_EPS, operations)
        self.proj_in = operations.Linear(channels, channels) if linear else operations.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(channels, heads, head_dim, context_dim, dropout, operations) for _ in range(depth))
        self.proj_out = operations.Linear(channels, channels) if linear else operations.Conv2d(channels, channels, 1)

    def forward(self, x, context, call=None):
        height, width = x.shape[-2:]
        if call is not None:
            call.site.activations_shape = list(x.shape)
        h = self.norm(x)
        if not self.linear:
            h = self.proj_in(h)
        h = h.flatten(2).transpose(1, 2)  # (B, H*W, C): one token per pixel
        if self.linear:
            h = self.proj_in(h)
        for index, block in enumerate(self.transformer_blocks):
            if call is not None:
                call.site.block_index = index
            h = block(h, context, call)
        if self.linear:
            h = self.proj_out(h)
        h = h.transpose(1, 2).unflatten(2, (height, width))
        if not self.linear:
            h = self.proj_out(h)
        return x + h


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 convolution."""

    def __init__(self, channels, operations=nn):
        super().__init__()
        self.op = operations.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to the skip connection's size (2x), then a 3x3 convolution."""

    def __init__(self, channels, operations=nn):
        super().__init__()
        self.conv = operations.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, size=None):
        return self.conv(F.interpolate(x, size=size or (2 * x.shape[-2], 2 * x.shape[-1]), mode="nearest"))


class Block(nn.ModuleList):
    """One numbered block of the checkpoint layout (e.g. input_blocks.4): its layers applied in turn.

    `output_shape`: the shape of the skip connection the next block joins (an upsampling layer matches its size).
    """

    def forward(self, x, emb, context, output_shape=None, call=None):
        for layer in self:
            handler = call.hooks.layer_handler(layer) if call is not None and call.hooks.layer else None
            if handler is not None:
                x = handler(layer, x, emb, context, call.site, output_shape)
            elif isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context, call)
                if call is not None:
                    call.site.transformer_index += 1
            elif isinstance(layer, Upsample):
                x = layer(x, None if output_shape is None else tuple(output_shape[-2:]))
            else:
                x = layer(x)
        return x
