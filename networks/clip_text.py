"""CLIP's text transformer (Radford et al. 2021): a causal pre-norm transformer read out at the end token.

x_0 = token_embedding[tokens] + position_embedding
x_l = x_{l-1} + attention(norm(x_{l-1}))   then   x_l = x_l + mlp(norm(x_l))        l = 1..L
last = final_norm(x_L);  pooled = last at the first end token;  projected = W pooled

Attention is causal (each token sees itself and the tokens before it), so the end token is the
only one that has read the whole text: it is the text's summary ("pooled"). Diffusion models
condition on the hidden states of a chosen layer instead ("clip skip": -1 the last, -2 the one
before), with or without the final norm, as each model was trained.
"""
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

START_TOKEN, END_TOKEN = 49406, 49407


def quick_gelu(x):
    """GELU approximated by x sigmoid(1.702 x) (Hendrycks & Gimpel 2016), as OpenAI's CLIP was trained."""
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": F.gelu}


@dataclass(frozen=True)
class ClipTextConfig:
    """The shape of a CLIP text tower; `projection` is the pooled output's projected width (0: none)."""

    width: int
    layers: int
    heads: int
    mlp_width: int
    activation: str
    projection: int = 0
    positions: int = 77
    vocabulary: int = 49408
    norm_eps: float = 1e-5
    end_token: int = END_TOKEN


# The three text towers of Stable Diffusion, at full size.
ARCHITECTURES = {
    "clip_l": ClipTextConfig(width=768, layers=12, heads=12, mlp_width=3072, activation="quick_gelu", projection=768),
    "clip_h": ClipTextConfig(width=1024, layers=24, heads=16, mlp_width=4096, activation="gelu", projection=1024),
    "clip_g": ClipTextConfig(width=1280, layers=32, heads=20, mlp_width=5120, activation="gelu", projection=1280),
    # The pack's own small model: CLIP's tokenizer and layout at 64 wide (its vocabulary is most of its size).
    "clip_small": ClipTextConfig(width=64, layers=4, heads=2, mlp_width=256, activation="gelu"),
}
ARCHITECTURE_NAMES = {"clip_l": "CLIP ViT-L/14 (OpenAI)", "clip_h": "OpenCLIP ViT-H/14", "clip_g": "OpenCLIP ViT-bigG/14",
                      "clip_small": "Diffusion Blocks small CLIP text (64 wide)"}


class TextOutput(NamedTuple):
    """hidden: the chosen layer (B, T, width); pooled: the last layer's end token (B, width); projected: W pooled
    (pooled itself for a tower without projection)."""

    hidden: torch.Tensor
    pooled: torch.Tensor
    projected: torch.Tensor


class SelfAttention(nn.Module):
    """Causal multi-head self-attention (Vaswani et al. 2017) with one fused q, k, v projection."""

    def __init__(self, width, heads):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} does not split into {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x):
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(batch, length, width))


class MLP(nn.Module):
    """Two-layer feed-forward network applied to each token."""

    def __init__(self, width, mlp_width, activation):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, mlp_width), nn.Linear(mlp_width, width)
        self.activation = ACTIVATIONS[activation]

    def forward(self, x):
        return self.fc2(self.activation(self.fc1(x)))


class Block(nn.Module):
    """One pre-norm residual block: attention then MLP, each reading a layer-normed copy of the stream."""

    def __init__(self, config):
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.width, eps=config.norm_eps)
        self.attn = SelfAttention(config.width, config.heads)
        self.mlp_norm = nn.LayerNorm(config.width, eps=config.norm_eps)
        self.mlp = MLP(config.width, config.mlp_width, config.activation)

    def forward(self, x):
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class ClipTextTransformer(nn.Module):
    """CLIP's text tower: token and position embeddings, L blocks, final norm, optional pooled projection."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocabulary, config.width)
        self.position_embedding = nn.Parameter(torch.randn(config.positions, config.width) * 0.01)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.final_norm = nn.LayerNorm(config.width, eps=config.norm_eps)
        self.projection = nn.Linear(config.width, config.projection, bias=False) if config.projection else None

    def embed(self, tokens, token_vectors=None):
        """x_0: the tokens' embeddings (or the given vectors, e.g. textual inversions) plus position embeddings."""
        if tokens.shape[1] > self.config.positions:
            raise ValueError(f"{tokens.shape[1]} tokens: CLIP reads at most {self.config.positions} at once")
        x = self.token_embedding(tokens) if token_vectors is None else token_vectors.to(self.position_embedding.dtype)
        return x + self.position_embedding[: tokens.shape[1]]

    def hidden_states(self, tokens, token_vectors=None):
        """The residual stream before the first block and after each block: L + 1 tensors (B, T, width)."""
        states = [self.embed(tokens, token_vectors)]
        for block in self.blocks:
            states.append(block(states[-1]))
        return states

    def forward(self, tokens, token_vectors=None, layer=-1, norm_hidden=True):
        """TextOutput for token ids (B, T); token_vectors (B, T, width) replace the ids' embeddings when given."""
        layers = self.config.layers
        if not -layers <= layer < layers:
            raise ValueError(f"layer {layer}: this text encoder has {layers} layers (-1 is the last, -{layers} the first)")
        chosen = layer % layers
        x = self.embed(tokens, token_vectors)
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index == chosen:
                hidden = x
        last = self.final_norm(x)
        if norm_hidden:
            hidden = last if chosen == layers - 1 else self.final_norm(hidden)
        pooled = last[torch.arange(len(tokens), device=tokens.device), end_positions(tokens, self.config.end_token)]
        projected = self.projection(pooled) if self.projection is not None else pooled
        return TextOutput(hidden, pooled, projected)


def end_positions(tokens, end_token):
    """Where each row's first end token is (the last position when a row has none)."""
    is_end = tokens == end_token
    first = is_end.int().argmax(dim=1)
    return torch.where(is_end.any(dim=1), first, tokens.shape[1] - 1)
