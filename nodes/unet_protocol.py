"""ComfyUI's U-Net protocol on the pack's U-Net: `transformer_options` patches and a ControlNet's `control` dict become
the network's own hooks (networks.unet.hooks), each ComfyUI patch called as ComfyUI's U-Net calls it.

ComfyUI's U-Net (comfy/ldm/modules/diffusionmodules/openaimodel.py, attention.py) runs a patch with the live
`transformer_options` of the call (block-level patches) or an `extra_options` copy per transformer layer (attention
patches), after setting block, block_index, transformer_index, original_shape and activations_shape; the sampler
has put cond_or_uncond, sigmas and the rest there. Anything this network cannot honour is refused by name.
"""
import functools

import comfy.ldm.modules.attention as comfy_attention
import comfy.ldm.modules.diffusionmodules.openaimodel as comfy_unet
import comfy.patcher_extension as extension
import torch
import torch.nn.functional as F

from ..networks.unet import layers
from ..networks.unet.hooks import Control, UNetHooks

# transformer_options["patches"] name -> our hook point
BLOCK_PATCHES = {"input_block_patch": "input_block", "input_block_patch_after_skip": "input_block_after_skip"}
ATTENTION_INPUT_PATCHES = {"attn1_patch": "attn1_input", "attn2_patch": "attn2_input"}
ATTENTION_PATCHES = {"attn1_output_patch": "attn1_output", "middle_patch": "after_attn1",
                     "attn2_output_patch": "attn2_output"}
OTHER_PATCHES = ("emb_patch", "middle_block_after_patch", "output_block_patch", "forward_timestep_embed_patch")
SUPPORTED_PATCHES = (*BLOCK_PATCHES, *ATTENTION_INPUT_PATCHES, *ATTENTION_PATCHES, *OTHER_PATCHES)
SUPPORTED_REPLACES = ("attn1", "attn2")
# ComfyUI's layer classes a forward_timestep_embed_patch may name, and ours that play their part
LAYER_CLASSES = {comfy_unet.ResBlock: layers.ResBlock, comfy_unet.TimestepBlock: layers.ResBlock,
                 comfy_unet.Upsample: layers.Upsample, comfy_unet.Downsample: layers.Downsample}
CONTROL_PLACES = ("input", "middle", "output")
ATTENTION_OPTIONS = ("patches", "patches_replace")  # what a layer's extra_options leave out


class CallOptions:
    """One call's transformer_options, kept up to date with where the network is (a hooks.Site) for each patch."""

    def __init__(self, options):
        self.options = options
        self._extra_key, self._extra = None, None

    def at(self, site):
        """The live transformer_options, as ComfyUI's U-Net has them at this site."""
        options = self.options
        options["transformer_index"] = site.transformer_index
        options["block_index"] = site.block_index
        for name in ("block", "original_shape", "activations_shape"):
            value = getattr(site, name)
            if value is not None:
                options[name] = value
        return options

    def extra(self, site):
        """A transformer layer's extra_options: the options less the patches, with its heads; one dict per layer call
        (its attention patches share it, as in ComfyUI)."""
        key = (site.block, site.transformer_index, site.block_index)
        if key != self._extra_key:
            self._extra_key = key
            self._extra = {k: v for k, v in self.at(site).items() if k not in ATTENTION_OPTIONS}
            self._extra.update(n_heads=site.heads, dim_head=site.head_dim, attn_precision=None)
        return self._extra


def comfy_attention_function(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                             skip_output_reshape=False, **_):
    """Attention with the arguments of ComfyUI's optimized_attention (what an attention override is handed)."""
    if not skip_reshape:
        q, k, v = (t.reshape(q.shape[0], -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
    if mask is not None:
        mask = mask.unsqueeze(0) if mask.ndim == 2 else mask.unsqueeze(1) if mask.ndim == 3 else mask
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out if skip_output_reshape else out.transpose(1, 2).flatten(2)


def network_control(control) -> Control | None:
    """A ControlNet's `control` dict (lists popped from their end by ComfyUI's U-Net) as residuals in block order."""
    if not control:
        return None
    unknown = sorted(set(control) - set(CONTROL_PLACES))
    if unknown:
        raise ValueError(f"model: control residuals for {', '.join(map(repr, unknown))}, which the pack's U-Net does "
                         f"not have (it takes {', '.join(CONTROL_PLACES)})")
    return Control(**{place: list(reversed(control.get(place) or [])) for place in CONTROL_PLACES})


@functools.cache
def host_offers_every_layer() -> bool:
    """Whether this ComfyUI's U-Net hands every layer to a forward_timestep_embed_patch (0.33.0) or only layers of
    classes it does not know itself (0.3.75): tried once on its own forward_timestep_embed."""
    class Probe(comfy_unet.TimestepBlock):
        def forward(self, x, emb):
            return x

    offered = []
    patch = (Probe, lambda layer, x, *rest: offered.append(layer) or x)
    comfy_unet.forward_timestep_embed([Probe()], torch.zeros(1), torch.zeros(1), None,
                                      {"patches": {"forward_timestep_embed_patch": [patch]}})
    return bool(offered)


HOST_KNOWN_LAYERS = (comfy_unet.TimestepBlock, comfy_attention.SpatialTransformer, comfy_unet.Upsample)


def layer_class(class_type):
    """Our layer class for a forward_timestep_embed_patch's class: ComfyUI's core layers mapped, others as given; None
    where this ComfyUI would never offer such a layer to the patch (its own layer classes, on 0.3.75)."""
    if not host_offers_every_layer() and issubclass(class_type, HOST_KNOWN_LAYERS):
        return None
    if class_type in LAYER_CLASSES:
        return LAYER_CLASSES[class_type]
    if class_type.__module__.startswith("comfy."):
        raise ValueError(f"model: a forward_timestep_embed_patch for ComfyUI's {class_type.__name__} layers, which the "
                         f"pack's U-Net cannot hand to it (it can for "
                         f"{', '.join(sorted(c.__name__ for c in LAYER_CLASSES))} and for layers a patch added)")
    return class_type


def network_hooks(options: dict, model_channels: int) -> UNetHooks | None:
    """The network's hooks for a call's transformer_options (None when it asks for nothing); a ValueError names any
    patch, replacement or option the pack's U-Net cannot honour."""
    patches, replaces = options.get("patches") or {}, options.get("patches_replace") or {}
    override = options.get("optimized_attention_override")
    if not any(patches.values()) and not any(replaces.values()) and override is None:
        return None
    refuse(sorted(name for name, listed in patches.items() if listed and name not in SUPPORTED_PATCHES), "patches",
           SUPPORTED_PATCHES)
    refuse(sorted(name for name, table in replaces.items() if table and name not in SUPPORTED_REPLACES),
           "patches_replace", SUPPORTED_REPLACES)
    call = CallOptions(options)
    hooks = UNetHooks()
    for name, point in BLOCK_PATCHES.items():
        getattr(hooks, point).extend(block_patch(p, call) for p in patches.get(name, ()))
    for name, point in ATTENTION_INPUT_PATCHES.items():
        getattr(hooks, point).extend(attention_input_patch(p, call) for p in patches.get(name, ()))
    for name, point in ATTENTION_PATCHES.items():
        getattr(hooks, point).extend(attention_patch(p, call) for p in patches.get(name, ()))
    hooks.emb.extend(emb_patch(p, call, model_channels) for p in patches.get("emb_patch", ()))
    hooks.middle_block_after.extend(middle_after_patch(p, call) for p in patches.get("middle_block_after_patch", ()))
    hooks.output_block.extend(output_patch(p, call) for p in patches.get("output_block_patch", ()))
    layer_patches = ((layer_class(cls), handler) for cls, handler in patches.get("forward_timestep_embed_patch", ()))
    hooks.layer.extend((cls, layer_patch(handler, call)) for cls, handler in layer_patches if cls is not None)
    hooks.attn1_replace.update({key: replace_patch(fn, call) for key, fn in replaces.get("attn1", {}).items()})
    hooks.attn2_replace.update({key: replace_patch(fn, call) for key, fn in replaces.get("attn2", {}).items()})
    if override is not None:
        hooks.attention = attention_override(override, call)
    return hooks


def refuse(names, where, supported):
    if names:
        raise ValueError(f"model: the pack's U-Net cannot honour transformer_options[{where!r}] "
                         f"{', '.join(map(repr, names))} (a patch made for another kind of model?); it takes "
                         f"{', '.join(supported)}")


def block_patch(patch, call):
    return lambda h, site: patch(h, call.at(site))


def attention_input_patch(patch, call):
    return lambda n, context, value, site: patch(n, context, value, call.extra(site))


def attention_patch(patch, call):
    return lambda n, site: patch(n, call.extra(site))


def emb_patch(patch, call, model_channels):
    return lambda emb, site: patch(emb, model_channels, call.at(site))


def middle_after_patch(patch, call):
    return lambda state, site: patch({**state, "transformer_options": call.at(site)})["h"]


def output_patch(patch, call):
    return lambda h, skip, site: patch(h, skip, call.at(site))


def layer_patch(handler, call):
    return lambda layer, x, emb, context, site, output_shape: handler(layer, x, emb, context, call.at(site),
                                                                        output_shape, None, None, None)


def replace_patch(fn, call):
    return lambda q, k, v, site: fn(q, k, v, call.extra(site))


def attention_override(override, call):
    return lambda default, q, k, v, heads, site: override(comfy_attention_function, q, k, v, heads,
                                                          attn_precision=None, transformer_options=call.at(site))


class ComfyProtocolUNet(torch.nn.Module):
    """ComfyUI's diffusion_model: the pack's network under the original checkpoint names (its very modules, so
    weight patches by name reach it), called as ComfyUI calls a U-Net (x, t, context, y, control, transformer_options).
    """

    IGNORED_CONDS = ("crossattn_controlnet",)  # read by a ControlNet, not by the U-Net

    def __init__(self, network):
        super().__init__()
        for name, child in network._modules.items():
            setattr(self, name, child)
        object.__setattr__(self, "network", network)  # not a submodule: its weights are already ours, by name

    @property
    def dtype(self):
        return self.network.dtype

    def forward(self, x, timesteps, context=None, y=None, control=None, transformer_options={}, **kwargs):
        wrappers = extension.get_all_wrappers(extension.WrappersMP.DIFFUSION_MODEL, transformer_options)
        return extension.WrapperExecutor.new_class_executor(self._forward, self, wrappers).execute(
            x, timesteps, context, y, control, transformer_options, **kwargs)

    def _forward(self, x, timesteps, context=None, y=None, control=None, transformer_options={}, **kwargs):
        unknown = sorted(set(kwargs) - set(self.IGNORED_CONDS))
        if unknown:
            raise ValueError(f"model: the pack's U-Net takes no {', '.join(map(repr, unknown))} input (conditioning "
                             f"made for another kind of model?)")
        hooks = network_hooks(transformer_options, self.network.config.model_channels)
        return self.network(x, timesteps, context, y, control=network_control(control), hooks=hooks)
