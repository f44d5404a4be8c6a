"""The latent-diffusion U-Net's architecture as plain, serialisable data (the published presets: networks.families)."""
import dataclasses
import json
from dataclasses import dataclass

GROUPS = 32  # GroupNorm groups throughout the network (Rombach et al. 2022, as in the DDPM U-Net)


@dataclass(frozen=True)
class UNetConfig:
    """Everything that fixes the network's shapes (Rombach et al. 2022, app. E; Podell et al. 2023, tab. 1).

    Depths are given per block, in the order of the checkpoint's numbered blocks: `transformer_depth`
    for each residual block of the encoder (input_blocks 1, 2, 4, 5, ...), `transformer_depth_output`
    for each decoder block (output_blocks 0, 1, 2, ...: deepest level first). 0 means no attention.
    The middle block is residual block, transformer of `transformer_depth_middle`, residual block; with depth 0
    the two residual blocks alone, with -1 one residual block alone (SSD-1B; ComfyUI's numbering).
    Attention heads are either `num_heads` per layer (SD1.x) or `head_channels` wide (SD2.x, SDXL).
    """

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple = (1, 2, 4, 4)
    num_res_blocks: tuple = (2, 2, 2, 2)
    transformer_depth: tuple = (1, 1, 1, 1, 1, 1, 0, 0)
    transformer_depth_output: tuple = (0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1)
    transformer_depth_middle: int = 1
    context_dim: int = 768
    num_heads: int = 8
    head_channels: int = -1
    linear_projection: bool = False
    adm_in_channels: int = 0
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("channel_mult", "num_res_blocks", "transformer_depth", "transformer_depth_output"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        levels = len(self.channel_mult)
        if levels < 1 or len(self.num_res_blocks) != levels:
            raise ValueError(f"UNetConfig: num_res_blocks {self.num_res_blocks} must give one count per level "
                             f"of channel_mult {self.channel_mult}")
        if len(self.transformer_depth) != sum(self.num_res_blocks):
            raise ValueError(f"UNetConfig: transformer_depth needs one depth per encoder residual block "
                             f"({sum(self.num_res_blocks)}), got {len(self.transformer_depth)}")
        if len(self.transformer_depth_output) != sum(n + 1 for n in self.num_res_blocks):
            raise ValueError(f"UNetConfig: transformer_depth_output needs one depth per decoder block "
                             f"({sum(n + 1 for n in self.num_res_blocks)}), got {len(self.transformer_depth_output)}")
        if self.transformer_depth_middle < -1:
            raise ValueError(f"UNetConfig: transformer_depth_middle {self.transformer_depth_middle}: give a depth, 0 (no "
                             "attention) or -1 (one residual block alone)")
        if (self.num_heads > 0) == (self.head_channels > 0):
            raise ValueError("UNetConfig: give exactly one of num_heads or head_channels (the other -1)")
        for channels in self.level_channels:
            if channels % GROUPS:
                raise ValueError(f"UNetConfig: {channels} channels cannot be split into {GROUPS} norm groups")
            if self.has_attention and channels % (self.head_channels if self.head_channels > 0 else self.num_heads):
                raise ValueError(f"UNetConfig: {channels} channels do not split into attention heads "
                                 f"(num_heads {self.num_heads}, head_channels {self.head_channels})")
        if self.has_attention and not self.context_dim:
            raise ValueError("UNetConfig: attention layers need context_dim (the text embedding width)")

    @property
    def level_channels(self):
        return tuple(self.model_channels * m for m in self.channel_mult)

    @property
    def has_attention(self):
        return any(self.transformer_depth) or any(self.transformer_depth_output) or self.transformer_depth_middle > 0

    @property
    def latent_channels(self):
        """The channels of the latent it denoises: its output's; more input channels are conditioning concatenated
        to the latent (an inpainting U-Net's mask and masked image: 1 + 4)."""
        return min(self.in_channels, self.out_channels)

    @property
    def concat_channels(self):
        """Input channels beyond the latent's (0 for a plain U-Net, 5 for an SD inpainting one)."""
        return self.in_channels - self.latent_channels

    @property
    def time_embed_dim(self):
        return 4 * self.model_channels

    def heads(self, channels):
        """(number of heads, channels per head) of an attention layer of this width."""
        if self.head_channels > 0:
            return channels // self.head_channels, self.head_channels
        return self.num_heads, channels // self.num_heads

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"UNetConfig: unknown fields {sorted(unknown)}")
        return cls(**data)


def uniform_depths(depth_per_level, num_res_blocks=2):
    """(encoder, decoder) per-block depths for one transformer depth per level, as the published models use."""
    encoder = tuple(d for d in depth_per_level for _ in range(num_res_blocks))
    decoder = tuple(d for d in reversed(depth_per_level) for _ in range(num_res_blocks + 1))
    return encoder, decoder


def _preset(depth_per_level, num_res_blocks=2, **fields):
    encoder, decoder = uniform_depths(depth_per_level, num_res_blocks)
    return UNetConfig(num_res_blocks=(num_res_blocks,) * len(depth_per_level), transformer_depth=encoder,
                      transformer_depth_output=decoder, **fields)
