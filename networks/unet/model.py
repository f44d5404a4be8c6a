"""The latent-diffusion U-Net noise predictor (Rombach et al. 2022; SDXL: Podell et al. 2023)."""
import torch
from torch import nn

from .config import UNetConfig
from .hooks import Call, Control, Site
from .layers import Block, Downsample, ResBlock, SpatialTransformer, Upsample, norm, timestep_embedding


class UNet(nn.Module):
    """eps(x, t, text[, vector]): an encoder-decoder of residual blocks and spatial transformers with skip connections.

    Time (and SDXL's vector condition `y`) enter every residual block through one embedding; the
    text enters every transformer through cross-attention. Parameter names follow the original
    checkpoints (`input_blocks.*`, `middle_block.*`, `output_blocks.*`), so their weights load as-is.
    `operations`: the namespace its Linear, Conv2d, GroupNorm and LayerNorm layers are made from (networks.unet.layers;
    torch.nn when None).
    """

    def __init__(self, config=UNetConfig(), operations=None):
        super().__init__()
        self.config = config
        c = config
        ops = operations or nn
        emb = c.time_embed_dim
        self.time_embed = nn.Sequential(ops.Linear(c.model_channels, emb), nn.SiLU(), ops.Linear(emb, emb))
        self.label_emb = None
        if c.adm_in_channels:  # SDXL: pooled text and size embeddings, added to the time embedding
            self.label_emb = nn.Sequential(nn.Sequential(ops.Linear(c.adm_in_channels, emb), nn.SiLU(),
                                                         ops.Linear(emb, emb)))

        self.input_blocks = nn.ModuleList([Block([ops.Conv2d(c.in_channels, c.model_channels, 3, padding=1)])])
        skips, channels = [c.model_channels], c.model_channels
        depths = iter(c.transformer_depth)
        for level, (width, blocks) in enumerate(zip(c.level_channels, c.num_res_blocks)):
            for _ in range(blocks):
                layers = [ResBlock(channels, width, emb, c.dropout, ops), *self._attention(width, next(depths), ops)]
                self.input_blocks.append(Block(layers))
                channels = width
                skips.append(channels)
            if level < len(c.channel_mult) - 1:
                self.input_blocks.append(Block([Downsample(channels, ops)]))
                skips.append(channels)

        middle = [ResBlock(channels, channels, emb, c.dropout, ops)]
        if c.transformer_depth_middle >= 0:
            middle += [*self._attention(channels, c.transformer_depth_middle, ops),
                       ResBlock(channels, channels, emb, c.dropout, ops)]
        self.middle_block = Block(middle)

        self.output_blocks = nn.ModuleList()
        depths = iter(c.transformer_depth_output)
        for level in reversed(range(len(c.channel_mult))):
            width, blocks = c.level_channels[level], c.num_res_blocks[level]
            for index in range(blocks + 1):
                layers = [ResBlock(channels + skips.pop(), width, emb, c.dropout, ops),
                          *self._attention(width, next(depths), ops)]
                channels = width
                if level > 0 and index == blocks:
                    layers.append(Upsample(channels, ops))
                self.output_blocks.append(Block(layers))

        self.out = nn.Sequential(norm(channels, operations=ops), nn.SiLU(),
                                 ops.Conv2d(channels, c.out_channels, 3, padding=1))

    def _attention(self, channels, depth, operations):
        if depth <= 0:
            return []
        heads, head_dim = self.config.heads(channels)
        return [SpatialTransformer(channels, heads, head_dim, depth, self.config.context_dim,
                                   self.config.linear_projection, self.config.dropout, operations)]

    @property
    def dtype(self):
        return self.time_embed[0].weight.dtype

    def forward(self, x, timesteps, context=None, y=None, control=None, hooks=None):
        """The predicted output (noise for eps models) for x (B, C, H, W) at timesteps (B,), text context
        (B, T, context_dim) and, for SDXL, the vector y (B, adm_in_channels); returned in x's dtype.
        `control`: residuals to add (a hooks.Control); `hooks`: callables at the named points (a hooks.UNetHooks)."""
        x, timesteps, context, y = self.checked_inputs(x, timesteps, context, y)
        call = Call(hooks, Site(original_shape=list(x.shape))) if hooks else None
        control = control if control else None
        dtype = self.dtype
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(dtype))
        for hook in hooks.emb if call else ():
            emb = hook(emb, call.site)
        if self.label_emb is not None:
            emb = emb + self.label_emb(y.to(dtype))

        h = x.to(dtype)
        skips = []
        for index, block in enumerate(self.input_blocks):
            if call:
                call.site.block = ("input", index)
            h = block(h, emb, context, call=call)
            if control:
                h = Control.added(h, control.input, index, "input block")
            for hook in hooks.input_block if call else ():
                h = hook(h, call.site)
            skips.append(h)
            for hook in hooks.input_block_after_skip if call else ():
                h = hook(h, call.site)
        if call:
            call.site.block = ("middle", 0)
        h = self.middle_block(h, emb, context, call=call)
        if control:
            h = Control.added(h, control.middle, 0, "the middle block")
        for hook in hooks.middle_block_after if call else ():
            h = hook(dict(h=h, x=x, emb=emb, context=context, y=y, timesteps=timesteps), call.site)
        for index, block in enumerate(self.output_blocks):
            skip = skips.pop()
            if call:
                call.site.block = ("output", index)
            if control:
                skip = Control.added(skip, control.output, index, "the skip of output block")
            for hook in hooks.output_block if call else ():
                h, skip = hook(h, skip, call.site)
            if skip is not None:
                h = torch.cat([h, skip], dim=1)
            h = block(h, emb, context, skips[-1].shape if skips else None, call)
        return self.out(h).to(x.dtype)

    def checked_inputs(self, x, timesteps, context, y):
        """The inputs in the shapes forward() needs, or a ValueError that says what was expected."""
        c = self.config
        if x.ndim != 4 or x.shape[1] != c.in_channels:
            raise ValueError(f"U-Net input must be (B, {c.in_channels}, H, W), got {tuple(x.shape)}")
        timesteps = torch.as_tensor(timesteps, device=x.device).reshape(-1)
        if timesteps.numel() == 1:
            timesteps = timesteps.expand(x.shape[0])
        if timesteps.numel() != x.shape[0]:
            raise ValueError(f"U-Net: {timesteps.numel()} timesteps for a batch of {x.shape[0]}")
        if c.has_attention:
            if context is None or context.ndim != 3 or context.shape[-1] != c.context_dim or context.shape[0] != x.shape[0]:
                found = None if context is None else tuple(context.shape)
                raise ValueError(f"U-Net: context must be the text embedding ({x.shape[0]}, T, {c.context_dim}), got {found}")
            context = context.to(self.dtype)
        if not c.adm_in_channels and y is not None:
            raise ValueError("U-Net: this network takes no vector condition y (only SDXL-style networks do)")
        if c.adm_in_channels and (y is None or tuple(y.shape) != (x.shape[0], c.adm_in_channels)):
            found = None if y is None else tuple(y.shape)
            raise ValueError(f"U-Net: y must be the vector condition ({x.shape[0]}, {c.adm_in_channels}), got {found}")
        return x, timesteps, context, y
