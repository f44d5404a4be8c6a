"""The U-Net's layers in their fast form, computed from the plain layers' own weights (networks.unet.layers).

Written for any memory layout, so channels-last activations (NHWC in memory) flow end to end: the pixels of a
feature map are then already the transformer's tokens, and flattening to (B, H*W, C) and back is free.
GroupNorm, its SiLU and the time-embedding shift are one expression that torch.compile fuses into one kernel;
self-attention projects q, k and v with one fused matrix; cross-attention takes its text keys and values ready made.
Inference only: dropout is left out.
"""
import torch
import torch.nn.functional as F

from .layers import ResBlock, SpatialTransformer, Upsample


def group_norm(x, norm, shift=None, silu=False):
    """GroupNorm(x + shift) (Wu & He 2018), then SiLU (Elfwing et al. 2018) when asked: statistics and affine in
    fp32 as torch's own kernel computes them, written out so that the compiler fuses it into one pass over x."""
    if shift is not None:
        x = x + shift
    groups = x.unflatten(1, (norm.num_groups, -1)).float()
    var, mean = torch.var_mean(groups, dim=(2, 3, 4), correction=0, keepdim=True)
    h = ((groups - mean) * torch.rsqrt(var + norm.eps)).flatten(1, 2)
    h = (h * norm.weight.float()[:, None, None] + norm.bias.float()[:, None, None]).to(x.dtype)
    return F.silu(h) if silu else h


def plain_group_norm(x, norm, shift=None, silu=False):
    """The same through torch's GroupNorm kernel and a separate SiLU (the fast path with its norms not fused)."""
    h = norm(x if shift is None else x + shift)
    return F.silu(h) if silu else h


def split_heads(t, heads):
    """(B, L, heads * d) -> (B, heads, L, d)."""
    return t.unflatten(-1, (heads, -1)).transpose(1, 2)


def merge_heads(t):
    """(B, heads, L, d) -> (B, L, heads * d)."""
    return t.transpose(1, 2).flatten(2)


def fused_qkv_weight(attention):
    """The self-attention's q, k and v projections stacked into one (3 * inner, dim) matrix: one matmul for all three."""
    return torch.cat([attention.to_q.weight, attention.to_k.weight, attention.to_v.weight])


def self_attention(attention, x, qkv_weight=None):
    """Self-attention of the plain layer, q, k and v from one fused projection when its weight is given."""
    if qkv_weight is None:
        return attention(x)
    q, k, v = F.linear(x, qkv_weight).unflatten(-1, (3, attention.heads, -1)).permute(2, 0, 3, 1, 4)
    return attention.to_out(merge_heads(F.scaled_dot_product_attention(q, k, v)))


def text_keys_values(attention, context):
    """Cross-attention's keys and values of the text, split into heads: the same at every step of a sampling run."""
    return split_heads(attention.to_k(context), attention.heads), split_heads(attention.to_v(context), attention.heads)


def cross_attention(attention, x, keys_values):
    """Cross-attention of the plain layer to keys and values made by text_keys_values."""
    q = split_heads(attention.to_q(x), attention.heads)
    return attention.to_out(merge_heads(F.scaled_dot_product_attention(q, *keys_values)))


def transformer_block(block, h, context, qkv_weight, keys_values):
    """networks.unet.layers.TransformerBlock: self-attention, cross-attention, feed-forward."""
    h = h + self_attention(block.attn1, block.norm1(h), qkv_weight)
    kv = keys_values if keys_values is not None else text_keys_values(block.attn2, context)
    h = h + cross_attention(block.attn2, block.norm2(h), kv)
    return h + block.ff(block.norm3(h))


def spatial_transformer(layer, x, context, weights, norm):
    """networks.unet.layers.SpatialTransformer; `weights` yields (qkv weight, text keys and values) per block."""
    batch, channels, height, width = x.shape
    h = norm(x, layer.norm)
    if not layer.linear:
        h = layer.proj_in(h)
    h = h.permute(0, 2, 3, 1).reshape(batch, height * width, channels)  # a view when x is channels-last
    if layer.linear:
        h = layer.proj_in(h)
    for block in layer.transformer_blocks:
        h = transformer_block(block, h, context, *next(weights))
    if layer.linear:
        h = layer.proj_out(h)
    h = h.reshape(batch, height, width, channels).permute(0, 3, 1, 2)  # back to (B, C, H, W), channels-last
    if not layer.linear:
        h = layer.proj_out(h)
    return x + h


def res_block(block, x, emb_act, norm):
    """networks.unet.layers.ResBlock with the SiLU of the time embedding computed once for all blocks (emb_act)."""
    h = block.in_layers[2](norm(x, block.in_layers[0], silu=True))
    shift = block.emb_layers[1](emb_act)[:, :, None, None]
    h = block.out_layers[3](norm(h, block.out_layers[0], shift=shift, silu=True))
    return block.skip_connection(x) + h


def numbered_block(block, h, emb_act, context, weights, norm, size=None):
    """networks.unet.layers.Block: its layers in turn."""
    for layer in block:
        if isinstance(layer, ResBlock):
            h = res_block(layer, h, emb_act, norm)
        elif isinstance(layer, SpatialTransformer):
            h = spatial_transformer(layer, h, context, weights, norm)
        elif isinstance(layer, Upsample):
            h = layer(h, size)
        else:
            h = layer(h)
    return h
