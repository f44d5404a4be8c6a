"""The pack's U-Net under ComfyUI's partial (low-VRAM) loading, in an in-process ComfyUI: the layers that do not fit
are cast to the compute device and patched (a LoRA) one by one as they run, as ComfyUI's own U-Net's are, so the
output equals the fully loaded patched model's; the fast network runs its plain path meanwhile."""
import contextlib
import logging

import pytest
import torch

from harness.nodes import run_node
from harness.small_unet import small_unet_file

from diffusion_blocks.devtools.compare import relative_error
from diffusion_blocks.networks.prediction import Cond
from diffusion_blocks.networks.unet.fast import FastUNet
from diffusion_blocks.pipeline import Guided

pytestmark = pytest.mark.usefixtures("one_thread")  # small networks: see tests/conftest.py

TOLERANCE = 1e-5
CPU = torch.device("cpu")
EVERY_LAYER = 1  # bytes of memory for the weights: no layer fits, every one is cast as it runs


@pytest.fixture(scope="module")
def nodes(pack_nodes):
    return pack_nodes


@pytest.fixture(scope="module")
def unet_file(comfy, tmp_path_factory):
    return small_unet_file(tmp_path_factory, "lowvram_unet")


def load(nodes, name, speed="standard"):
    """The MODEL wire of Load U-Net's network (a clone of its DB_UNET wire)."""
    unet, = run_node(nodes["DB_LoadUNet"], unet_name=name, weight_dtype="fp32", prediction="auto", zero_snr="auto",
                     speed=speed)
    network = unet.model.denoiser.network
    if isinstance(network, FastUNet):
        network.backend = "eager"  # dynamo traces, no code generation: quick on a small CPU
    return unet.clone()


def with_lora(model, seed=5):
    """A clone of the MODEL with a LoRA-like difference added to every Linear and Conv2d weight, as a LoRA loader
    adds its patches."""
    state = model.model.state_dict()
    keys = [key for key, value in state.items() if key.startswith("diffusion_model.") and value.ndim >= 2]
    generator = torch.Generator().manual_seed(seed)
    patched = model.clone()
    added = patched.add_patches({key: (0.2 * torch.randn(state[key].shape, generator=generator),) for key in keys}, 1.0)
    assert sorted(added) == sorted(keys) and any(".attn1.to_q." in key for key in keys)
    return patched


@contextlib.contextmanager
def loaded(patcher, memory=0):
    """The patcher's model loaded on the CPU with its patches: fully (memory 0) or partially, within `memory` bytes of
    weights, as ComfyUI loads it on a GPU too small for it; unloaded (patches undone) after."""
    patcher.patch_model(device_to=CPU, lowvram_model_memory=memory)
    try:
        yield patcher.model
    finally:
        patcher.unpatch_model(device_to=CPU)


def inputs(seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, 4, 8, 8, generator=generator), torch.tensor([2.0]), torch.randn(1, 4, 16, generator=generator)


def output(model):
    x, sigma, context = inputs()
    with torch.no_grad():
        return model.apply_model(x, sigma, c_crossattn=context)


def cast_layers(model):
    """Names of the layers ComfyUI casts as they run, and how many layers it could cast."""
    castable = {name: m for name, m in model.diffusion_model.named_modules() if hasattr(m, "comfy_cast_weights")}
    return [name for name, m in castable.items() if m.comfy_cast_weights], len(castable)


def test_partial_loading_casts_and_patches_every_layer_left_behind(nodes, unet_file):
    model = load(nodes, unet_file)
    patched = with_lora(model)
    with loaded(model) as plain:
        unpatched = output(plain)
    with loaded(patched) as full:
        expected = output(full)
    assert relative_error(expected, unpatched) > 1e-2  # the patches matter
    for memory in (EVERY_LAYER, patched.model_size() // 2):
        with loaded(patched, memory) as partial:
            cast, castable = cast_layers(partial)
            assert partial.model_lowvram and cast  # the cast path is what runs
            assert (len(cast) == castable) if memory == EVERY_LAYER else (0 < len(cast) < castable)
            assert relative_error(output(partial), expected) <= TOLERANCE
    with loaded(model) as plain:
        assert torch.equal(output(plain), unpatched) and not cast_layers(plain)[0]  # all undone


def test_the_fast_network_under_partial_loading_equals_the_plain_one(nodes, unet_file, caplog):
    plain, fast = (with_lora(load(nodes, unet_file, speed)) for speed in ("standard", "compiled"))
    x, sigma, context = inputs()
    cond, uncond = Cond(context, None), Cond(inputs(seed=2)[2], None)
    with loaded(plain) as full:
        expected, expected_step = output(full), Guided(full.denoiser, cond, uncond, 4.0)(x, sigma)
    with caplog.at_level(logging.WARNING, logger="diffusion_blocks"), loaded(fast, EVERY_LAYER) as partial:
        assert cast_layers(partial)[0]
        assert relative_error(output(partial), expected) <= TOLERANCE  # ComfyUI's samplers: the network's forward
        step = Guided(partial.denoiser, cond, uncond, 4.0)(x, sigma)  # the pack's Sample: the fast guided step
        assert relative_error(step, expected_step) <= TOLERANCE
    assert caplog.text.count("low-VRAM loading") == 1  # said once
