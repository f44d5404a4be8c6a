"""UNet(config, operations): every layer with weights made from a host's layer classes, with the plain network's
names and results; a FastUNet whose layers are cast as they run (a host's low-VRAM loading) runs the plain path."""
import functools
import logging
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffusion_blocks.devtools.compare import relative_error
from diffusion_blocks.networks.prediction import Cond, Denoiser
from diffusion_blocks.networks.training_spec import TrainingSpec
from diffusion_blocks.networks.unet import UNet, UNetConfig
from diffusion_blocks.networks.unet.fast import FastUNet
from diffusion_blocks.networks.unet_loading import load_unet
from diffusion_blocks.pipeline import Guided

pytestmark = pytest.mark.usefixtures("one_thread")  # small networks: see tests/conftest.py

TOLERANCE = 1e-5
SD_LIKE = UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1), transformer_depth=(1, 1),
                     transformer_depth_output=(1, 1, 1, 1), context_dim=8, num_heads=2)
SDXL_LIKE = UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1), transformer_depth=(0, 2),
                       transformer_depth_output=(2, 2, 0, 0), context_dim=16, num_heads=-1, head_channels=16,
                       linear_projection=True, adm_in_channels=12)
CONFIGS = pytest.mark.parametrize("config", [SD_LIKE, SDXL_LIKE], ids=["sd1_like", "sdxl_like"])
LAYERS = ("Linear", "Conv2d", "GroupNorm", "LayerNorm")


def counting_operations():
    """A namespace of torch.nn subclasses that count the layers made from them."""
    made = {name: 0 for name in LAYERS}

    def counted(name):
        def __init__(self, *args, **kwargs):
            made[name] += 1
            getattr(nn, name).__init__(self, *args, **kwargs)
        return type(f"Counted{name}", (getattr(nn, name),), {"__init__": __init__})

    return types.SimpleNamespace(made=made, **{name: counted(name) for name in LAYERS})


class CastLinear(nn.Linear):
    """A Linear as a host's low-VRAM layers are: its weight passed through `weight_function` as it runs."""

    comfy_cast_weights = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight_function = []

    def forward(self, x):
        weight = functools.reduce(lambda w, f: f(w), self.weight_function, self.weight)
        return F.linear(x, weight, self.bias)


class LazyLinear(nn.Linear):
    """A Linear that makes its weight only when loaded (as ComfyUI 0.33's do with dynamic VRAM)."""

    def __init__(self, in_features, out_features, bias=True):
        nn.Module.__init__(self)
        self.in_features, self.out_features = in_features, out_features
        self.weight, self.bias, self.has_bias = None, None, bias

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        for name in ("weight", "bias") if self.has_bias else ("weight",):
            setattr(self, name, nn.Parameter(state_dict[prefix + name], requires_grad=False))


def randomized(config, operations=None, seed=0):
    torch.manual_seed(seed)
    unet = UNet(config, operations).eval().requires_grad_(False)
    for p in unet.parameters():
        p.add_(0.1 * torch.randn_like(p))  # no zero-initialised layer
    return unet


def inputs(config, seed=1):
    g = torch.Generator().manual_seed(seed)
    x, context = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 5, config.context_dim, generator=g)
    y = torch.randn(2, config.adm_in_channels, generator=g) if config.adm_in_channels else None
    return x, torch.tensor([3.0, 700.0]), context, y


def layers_of(unet, kind):
    return [m for m in unet.modules() if isinstance(m, getattr(nn, kind))]


@CONFIGS
def test_every_layer_is_made_from_the_operations_given(config):
    plain, ops = randomized(config), counting_operations()
    ours = UNet(config, ops).eval()
    ours.load_state_dict(plain.state_dict())
    for kind in LAYERS:
        found = layers_of(ours, kind)
        assert found and all(isinstance(m, getattr(ops, kind)) for m in found), kind
        assert ops.made[kind] == len(found) == len(layers_of(plain, kind)), kind
    assert list(ours.state_dict()) == list(plain.state_dict())
    with torch.no_grad():
        assert torch.equal(ours(*inputs(config)), plain(*inputs(config)))


@pytest.mark.parametrize("operations", [counting_operations(), types.SimpleNamespace(
    Linear=LazyLinear, Conv2d=nn.Conv2d, GroupNorm=nn.GroupNorm, LayerNorm=nn.LayerNorm)], ids=["counting", "lazy"])
def test_load_unet_builds_from_the_operations_given(operations):
    plain = randomized(SDXL_LIKE)
    loaded = load_unet(plain.state_dict(), config=SDXL_LIKE, operations=operations)
    assert all(isinstance(m, operations.Linear) for m in layers_of(loaded, "Linear"))
    assert not any(p.is_meta for p in loaded.parameters())
    with torch.no_grad():
        assert torch.equal(loaded(*inputs(SDXL_LIKE)), plain(*inputs(SDXL_LIKE)))


def doubled_query(unet):
    """The first self-attention's query weight doubled as the layer runs, as a host's run-time patch does."""
    next(m for name, m in unet.named_modules() if name.endswith("attn1.to_q")).weight_function.append(lambda w: 2 * w)


@CONFIGS
def test_a_fast_network_whose_layers_are_cast_as_they_run_takes_the_plain_path(config, caplog):
    ops = types.SimpleNamespace(Linear=CastLinear, Conv2d=nn.Conv2d, GroupNorm=nn.GroupNorm, LayerNorm=nn.LayerNorm)
    plain, fast = randomized(config, ops), FastUNet(randomized(config, ops), compiled=False)
    x, t, context, y = inputs(config)
    assert not fast.casts_weights()
    with torch.no_grad():
        assert relative_error(fast(x, t, context, y), plain(x, t, context, y)) <= TOLERANCE
        doubled_query(plain)
        doubled_query(fast)
        assert fast.casts_weights()
        with caplog.at_level(logging.WARNING, logger="diffusion_blocks"):
            expected, result = plain(x, t, context, y), fast(x, t, context, y)
            fast(x, t, context, y)
        assert relative_error(result, expected) <= TOLERANCE
        assert caplog.text.count("low-VRAM loading") == 1  # said once
        cond, uncond = (Cond(context[i:i + 1], None if y is None else y[i:i + 1]) for i in (0, 1))
        steps = [Guided(Denoiser(n, TrainingSpec()), cond, uncond, 3.0)(x[:1], torch.tensor([2.0]))
                 for n in (plain, fast)]  # the pack's Sample: the fast guided step
        assert relative_error(steps[1], steps[0]) <= TOLERANCE
