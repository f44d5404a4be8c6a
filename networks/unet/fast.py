"""The U-Net's fast path: channels-last, fused norms and QKV, cached text keys/values, torch.compile and CUDA graphs.

FastUNet is the plain UNet's own modules (the same weight tensors, under the same state-dict names) run through
networks.unet.fast_layers. What it makes from the weights on the compute device (the fused QKV matrices, the text's
keys and values, CUDA graphs) is remade whenever the weights it came from move, are replaced (a patch) or change in
place, and `release()` drops it all (ComfyUI calls it when it unloads the model). While a host casts or patches some
layers' weights as they run (ComfyUI's layers when it loads the model partially), calls run the plain path.
"""
import logging
import operator

import torch
from torch import nn

from . import fast_layers
from .attention import attention_kernel, choose_backend
from .fast_graphs import CapturedCall, tensors
from .layers import SpatialTransformer, timestep_embedding
from .model import UNet

log = logging.getLogger("diffusion_blocks")
SPEEDS = ("standard", "compiled", "compiled + CUDA graphs")
MAX_SHAPES = 6  # compiled sizes (resolution x batch) kept per network; torch.compile keeps 8 per function by default
# a layer's marks that its weights are cast as it runs (ComfyUI's comfy.ops layers): True, or patch functions listed
CAST_FLAGS = ("comfy_cast_weights", "weight_function", "bias_function")


def stamp(tensors_):
    """What identifies the current state of some tensors: the objects, their in-place version, their memory."""
    return [(t, t._version, t.data_ptr()) for t in tensors_]


def unchanged(old, tensors_):
    """Whether `tensors_` are the very tensors of the stamp `old`, unmodified and unmoved since."""
    return old is not None and len(old) == len(tensors_) and all(
        o is t and version == t._version and address == t.data_ptr() for (o, version, address), t in zip(old, tensors_))


class FastUNet(UNet):
    """The same network on the same weights, run for speed; same call signature, same results within rounding.

    `channels_last`: activations and convolution weights NHWC in memory (the weights converted in place, once).
    `fused_norms`: GroupNorm + SiLU (+ the time-embedding shift) as one fusable expression. `fused_qkv`: one
    projection for self-attention's q, k and v. `cached_kv`: cross-attention's text keys and values made once per
    context tensor. `compiled`: torch.compile (inductor: fused kernels) once per input shape, at most `max_shapes`
    shapes (later ones run uncompiled, with a warning); `on_compile(message)` is told when a new shape compiles.
    `cuda_graphs`: on a CUDA device each compiled call is also captured as one CUDA graph and replayed.
    Attention uses the fastest exact SDPA kernel of the GPU, timed when the network first runs there.
    """

    def __init__(self, unet, compiled=True, cuda_graphs=False, backend="inductor", channels_last=True, fused_norms=True,
                 fused_qkv=True, cached_kv=True, max_shapes=MAX_SHAPES, on_compile=None):
        nn.Module.__init__(self)
        self.config, self.label_emb = unet.config, None
        for name, child in unet._modules.items():
            setattr(self, name, child)
        for name in ("family", "trained_as", "source_file"):
            if hasattr(unet, name):
                setattr(self, name, getattr(unet, name))
        self.train(unet.training)
        if channels_last:
            self.to(memory_format=torch.channels_last)  # the convolution weights' layout; their values stay
        self.compiled, self.cuda_graphs, self.backend = compiled, cuda_graphs, backend
        self.channels_last, self.fused_norms, self.fused_qkv, self.cached_kv = (channels_last, fused_norms, fused_qkv,
                                                                               cached_kv)
        self.max_shapes, self.on_compile = max_shapes, on_compile
        self.blocks = [b for m in self.modules() if isinstance(m, SpatialTransformer) for b in m.transformer_blocks]
        slots = [(m._parameters, name) for m in self.modules() for name, p in m._parameters.items() if p is not None]
        self._slots = tuple(zip(*slots))  # (parameter dicts, names): where each weight is found, even once replaced
        self._castable = [m for m in self.modules() if any(hasattr(m, name) for name in CAST_FLAGS)]
        self._functions, self._shapes, self._said = {}, set(), set()
        self.attention_choice = {}  # (device, dtype) -> (kernel name, {kernel: ms per call})
        self.release()

    def release(self):
        """Drop what was made on the compute device (fused QKV, text keys and values, CUDA graphs and their memory)."""
        self._qkv, self._kv, self._graphs = (None, None), (None, None), {}

    def plain_path_reason(self, control=None, hooks=None):
        """Why a call runs the plain network's path (what the fast path would drop), or None."""
        if control or hooks:
            return ("a call with control residuals or patches at the U-Net's hook points runs the plain (uncompiled) "
                    "path, which honours them")
        if self.casts_weights():
            return ("part of the model is loaded layer by layer as it runs (ComfyUI's low-VRAM loading): the plain "
                    "(uncompiled) path runs, which casts and patches each layer's weights")
        return None

    def casts_weights(self):
        """Whether some layer's weights are cast (moved, converted, patched) as it runs, as a host's layers do while
        the host keeps them elsewhere (ComfyUI's, flagged by CAST_FLAGS): the fast path's ready-made weights and
        direct reads would miss that."""
        return any(getattr(m, flag, None) for m in self._castable for flag in CAST_FLAGS)

    # ---- what is made from the weights -------------------------------------------------------------------------

    def qkv_weights(self):
        """Each transformer block's fused self-attention weight (None each when not fused), remade when its weights
        change."""
        if not self.fused_qkv:
            return [None] * len(self.blocks)
        params = [p for b in self.blocks for p in (b.attn1.to_q.weight, b.attn1.to_k.weight, b.attn1.to_v.weight)]
        if not unchanged(self._qkv[0], params):
            with torch.no_grad():
                self._qkv = (stamp(params), [fast_layers.fused_qkv_weight(b.attn1) for b in self.blocks])
        return self._qkv[1]

    def text_keys_values(self, context):
        """Each block's cross-attention keys and values of `context` (None each when not cached): made once, reused
        while the context tensor, the key and value weights and their patches stay the same."""
        if not self.cached_kv or context is None:
            return [None] * len(self.blocks)
        params = [p for b in self.blocks for p in (b.attn2.to_k.weight, b.attn2.to_v.weight)]
        if not unchanged(self._kv[0], [context, *params]):
            with torch.no_grad():
                made = [fast_layers.text_keys_values(b.attn2, context) for b in self.blocks]
                self._kv = (stamp([context, *params]), made)
        return self._kv[1]

    # ---- the network ------------------------------------------------------------------------------------------

    def forward(self, x, timesteps, context=None, y=None, control=None, hooks=None):
        """As UNet.forward (eps for x (B, C, H, W) at timesteps (B,), text context, SDXL's y), by the fast path; a call
        with control residuals or hooks, or while layers are cast as they run, runs the plain network's path instead
        (said once), so nothing is dropped."""
        plain = self.plain_path_reason(control, hooks)
        if plain is not None:
            self._say_once(plain)
            return UNet.forward(self, x, timesteps, context, y, control, hooks)
        x, timesteps, context, y = self.checked_inputs(x, timesteps, context, y)
        with torch.no_grad():
            out = self.run("U-Net", self.prepared_forward, self.qkv_weights(),
                           (context, y, self.text_keys_values(context)), (x, timesteps.float()))
        return out.to(x.dtype).contiguous()

    def prepared_forward(self, qkv, context, y, kv, x, timesteps):
        """The forward pass on prepared weights: fused QKV per block (or None), text keys/values per block (or None)."""
        dtype = self.dtype
        norm = fast_layers.group_norm if self.fused_norms else fast_layers.plain_group_norm
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(dtype))
        if self.label_emb is not None:
            emb = emb + self.label_emb(y.to(dtype))
        emb_act = torch.nn.functional.silu(emb)
        weights = iter(zip(qkv, kv))
        h = x.to(dtype)
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        skips = []
        for block in self.input_blocks:
            h = fast_layers.numbered_block(block, h, emb_act, context, weights, norm)
            skips.append(h)
        h = fast_layers.numbered_block(self.middle_block, h, emb_act, context, weights, norm)
        for block in self.output_blocks:
            h = torch.cat([h, skips.pop()], dim=1)
            h = fast_layers.numbered_block(block, h, emb_act, context, weights, norm,
                                           skips[-1].shape[-2:] if skips else None)
        head_norm, _, head_conv = self.out
        return head_conv(norm(h, head_norm, silu=True))

    # ---- running it: compiled once per shape, on CUDA captured as a graph ---------------------------------------

    def addresses(self):
        """Where every weight is in memory now: a CUDA graph recorded on other addresses is stale."""
        return tuple(map(torch.Tensor.data_ptr, map(operator.getitem, *self._slots)))

    def run(self, name, fn, weights, run_inputs, step_inputs, addresses=None):
        """fn(weights, *run_inputs, *step_inputs) as this network's settings say: eagerly, compiled (once per shape of
        the inputs, `name` telling the function), or compiled and replayed as a CUDA graph. The first step input is
        the batch the network sees. Weights are read in place; run inputs change between runs, step inputs every call.
        `addresses`: the weights' addresses when the caller knows them (checked once per sampling run), else looked
        up."""
        x = step_inputs[0]
        with attention_kernel(self.attention_backend(x)):
            key = self._compiled_key(name, run_inputs, step_inputs) if self.compiled else None
            if key is None:
                return fn(weights, *run_inputs, *step_inputs)
            compiled = self._functions.get(name)
            if compiled is None:
                compiled = self._functions[name] = torch.compile(fn, backend=self.backend, dynamic=False)
            if not self.cuda_graphs or x.device.type != "cuda":
                if self.cuda_graphs:
                    self._say_once("CUDA graphs need a CUDA device: running compiled without them")
                return compiled(weights, *run_inputs, *step_inputs)
            return self._graph(key, compiled, weights, run_inputs, step_inputs, addresses or self.addresses())

    def _compiled_key(self, name, run_inputs, step_inputs):
        """The compiled version's key for these inputs (shapes of the inputs that are tensors; what is made from them,
        like the text keys and values, follows), or None when it runs uncompiled: a new shape is compiled, and said,
        while fewer than max_shapes are."""
        key = (name, tuple((t.shape, t.dtype, t.device) for t in (*run_inputs, *step_inputs)
                           if isinstance(t, torch.Tensor)))
        if key in self._shapes:
            return key
        x = step_inputs[0]
        if len(self._shapes) >= self.max_shapes:
            self._say_once(f"already {self.max_shapes} input shapes compiled; batch {x.shape[0]} at "
                           f"{x.shape[-2]}x{x.shape[-1]} runs uncompiled")
            return None
        self._shapes.add(key)
        message = (f"compiling the {name} for batch {x.shape[0]} at {x.shape[-2]}x{x.shape[-1]} "
                   f"({str(x.dtype).removeprefix('torch.')}, {x.device.type}; once per size and batch)")
        log.info("diffusion_blocks: %s", message)
        if self.on_compile is not None:
            self.on_compile(message)
        return key

    def _graph(self, key, compiled, weights, run_inputs, step_inputs, addresses):
        """The call replayed from its CUDA graph, recorded first for this compiled key and these weights' addresses."""
        addresses = addresses + tuple(t.data_ptr() for t in tensors(weights))
        graph = self._graphs.get(key)
        if graph is None or graph[0] != addresses:  # recorded on weights that have moved since: stale
            self._graphs.pop(key, None)
            try:
                graph = self._graphs[key] = (addresses, CapturedCall(compiled, weights, run_inputs, step_inputs))
            except RuntimeError as error:  # a kernel that cannot be captured: still compiled, and said loudly
                self.cuda_graphs = False
                log.warning("diffusion_blocks: CUDA graph capture failed, running compiled without CUDA graphs: %s",
                            error)
                return compiled(weights, *run_inputs, *step_inputs)
        return graph[1](run_inputs, step_inputs)

    def attention_backend(self, x):
        """The exact SDPA kernel for x's device and dtype, chosen (timed) on the first call there and logged."""
        key = (str(x.device), x.dtype)
        if key not in self.attention_choice:
            c = self.config
            first = next((i for i, d in enumerate(c.transformer_depth) if d), 0) // max(c.num_res_blocks[0], 1)
            heads, head_dim = c.heads(c.level_channels[first])
            tokens = (x.shape[-2] >> first) * (x.shape[-1] >> first)
            self.attention_choice[key] = choose_backend(x.device, self.dtype, 2 * x.shape[0], heads, tokens, head_dim)
            timings = ", ".join(f"{k} {v:.3f} ms" for k, v in self.attention_choice[key][1].items())
            log.info("diffusion_blocks: attention through the %s SDPA kernel on %s%s", self.attention_choice[key][0],
                     key[0], f" (timed: {timings})" if timings else "")
        return self.attention_choice[key][0]

    def _say_once(self, message):
        if message not in self._said:
            self._said.add(message)
            log.warning("diffusion_blocks: %s", message)


def fast_unet(unet, channels_last=True, compile=True, cuda_graphs=True, **options):
    """unet set up for speed (FastUNet): channels-last, fused layers, and with `compile` torch.compile plus, on CUDA
    and with `cuda_graphs`, CUDA graphs. Same call signature, same weights."""
    return FastUNet(unet, compiled=compile, cuda_graphs=cuda_graphs, channels_last=channels_last, **options)


def with_speed(unet, speed, **options):
    """The network for a speed setting of the loader (SPEEDS): the plain one for 'standard', else a FastUNet."""
    if speed not in SPEEDS:
        raise ValueError(f"speed must be one of {', '.join(SPEEDS)}, got {speed!r}")
    if speed == SPEEDS[0]:
        return unet
    return fast_unet(unet, cuda_graphs=speed == SPEEDS[2], **options)
