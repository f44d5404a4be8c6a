"""Named points where a caller reaches into the U-Net's forward pass with plain callables, and control residuals.

A U-Net call with `hooks=UNetHooks(...)` runs every hook at its point, in list order, each told where it runs by a
`Site`. The points (shapes are those of the tensors at that point; B batch, L tokens, C channels):

  emb(emb, site) -> emb                          the time embedding, before SDXL's vector is added
  input_block(h, site) -> h                      after each input block (and its control residual)
  input_block_after_skip(h, site) -> h           after the block's output was kept as the skip connection
  middle_block_after(state, site) -> h           after the middle block; state: h, x, emb, context, y, timesteps
  output_block(h, skip, site) -> (h, skip)       before each output block joins its skip; skip None: none joined
  layer: [(layer class, fn(layer, x, emb, context, site, output_shape) -> x)]
                                                 runs a block's layer of that class instead of the network
  attn1_input / attn2_input(n, context, value, site) -> (n, context, value)
                                                 the inputs of self- / cross-attention (n the normed tokens (B, L, C))
  attn1_output / attn2_output(n, site) -> n      the attention's output, before it is added back
  after_attn1(x, site) -> x                      the tokens after self-attention was added back
  attn1_replace / attn2_replace: {key: fn(q, k, v, site) -> (B, L, heads * d)}
                                                 the attention itself (projections kept), key (block name, block
                                                 number, layer) or, for every layer of the block, (name, number)
  attention(default, q, k, v, heads, site) -> (B, L, heads * d)
                                                 every attention product (`default` is the network's own)

A `Control` holds residuals added where a ControlNet or T2I-Adapter adds them: after each input block, after the
middle block, and onto each output block's skip connection.
"""
from dataclasses import dataclass, field

import torch

POINTS = ("emb", "input_block", "input_block_after_skip", "middle_block_after", "output_block", "layer",
          "attn1_input", "attn1_output", "after_attn1", "attn2_input", "attn2_output")


@dataclass
class Site:
    """Where a hook runs: the numbered block, the spatial transformer and its layer, and the shapes seen there."""

    block: tuple = None  # ("input", 4), ("middle", 0), ("output", 3)
    transformer_index: int = 0  # spatial transformers run before this one in this call
    block_index: int = 0  # the layer within the spatial transformer
    original_shape: list = None  # the network's input x
    activations_shape: list = None  # the feature map entering the current spatial transformer
    heads: int = 0  # of the current attention layer
    head_dim: int = 0


@dataclass
class UNetHooks:
    """Callables for the U-Net's named points (module docstring); empty lists are points left alone."""

    emb: list = field(default_factory=list)
    input_block: list = field(default_factory=list)
    input_block_after_skip: list = field(default_factory=list)
    middle_block_after: list = field(default_factory=list)
    output_block: list = field(default_factory=list)
    layer: list = field(default_factory=list)
    attn1_input: list = field(default_factory=list)
    attn1_output: list = field(default_factory=list)
    after_attn1: list = field(default_factory=list)
    attn2_input: list = field(default_factory=list)
    attn2_output: list = field(default_factory=list)
    attn1_replace: dict = field(default_factory=dict)
    attn2_replace: dict = field(default_factory=dict)
    attention: object = None

    def __bool__(self):
        return any(getattr(self, point) for point in POINTS) or bool(
            self.attn1_replace or self.attn2_replace or self.attention is not None)

    def replacement(self, which, site):
        """The attn1 / attn2 replacement for this layer: keyed by (name, number, layer), else by (name, number)."""
        table = self.attn1_replace if which == "attn1" else self.attn2_replace
        if not table or site.block is None:
            return None
        return table.get((*site.block, site.block_index), table.get(tuple(site.block)))

    def layer_handler(self, layer):
        """The `layer` hook whose class this layer is an instance of (the first listed), or None."""
        return next((fn for cls, fn in self.layer if isinstance(layer, cls)), None)


@dataclass
class Control:
    """Residuals by block, each list in the network's order, None where a block gets none (a ControlNet's outputs)."""

    input: list = field(default_factory=list)  # added to each input block's output
    middle: list = field(default_factory=list)  # added to the middle block's output
    output: list = field(default_factory=list)  # added to each output block's skip connection

    def __bool__(self):
        return any(r is not None for r in (*self.input, *self.middle, *self.output))

    @staticmethod
    def added(h, residuals, index, where):
        """h plus the residual of block `index` (none past the list's end), or a ValueError naming the block."""
        residual = residuals[index] if index < len(residuals) else None
        if residual is None:
            return h
        try:
            fits = torch.broadcast_shapes(h.shape, residual.shape) == h.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(f"U-Net: a control residual of shape {tuple(residual.shape)} does not fit {where} "
                             f"{index}'s {tuple(h.shape)} (a ControlNet made for another model or size?)")
        return h + residual.to(h.dtype)


@dataclass
class Call:
    """One forward pass with hooks: the hooks and the site they are told of, updated as the pass moves on."""

    hooks: UNetHooks
    site: Site = field(default_factory=Site)
