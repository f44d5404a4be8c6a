"""Load U-Net's speed setting in an in-process ComfyUI: old workflows load unchanged, Sample through the fast network
equals Sample through the plain one, and ComfyUI's memory manager (unload, patches) never meets stale prepared state."""
import pytest
import torch

from harness.nodes import run_node
from harness.small_unet import small_unet_file

from diffusion_blocks.devtools.compare import relative_error
from diffusion_blocks.networks.unet import UNet
from diffusion_blocks.networks.unet.fast import SPEEDS, FastUNet

pytestmark = pytest.mark.usefixtures("one_thread")  # small networks: see tests/conftest.py

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def nodes(pack_nodes):
    return pack_nodes


@pytest.fixture(scope="module")
def unet_file(comfy, tmp_path_factory):
    return small_unet_file(tmp_path_factory, "speed_unet")


def load(nodes, name, **speed):
    patcher, = run_node(nodes["DB_LoadUNet"], unet_name=name, weight_dtype="fp32", prediction="auto", zero_snr="auto",
                        **speed)
    network = patcher.model.denoiser.network
    if isinstance(network, FastUNet):
        network.backend = "eager"  # dynamo traces, no code generation: quick on a small CPU
    return patcher


def text(seed):
    return [[torch.randn(1, 4, 16, generator=torch.Generator().manual_seed(seed)), {}]]


def sample(nodes, unet, seed=3):
    from diffusion_blocks.nodes.sampler_nodes import make_sampler
    from diffusion_blocks.schedules import get_sigmas

    latent, _ = run_node(nodes["DB_Sample"], unet=unet, sampler=make_sampler("dpmpp_2m"),
                         sigmas=get_sigmas("karras", steps=4, sigma_min=0.03, sigma_max=14.6),
                         latent={"samples": torch.zeros(1, 4, 8, 8)}, seed=seed, cfg=4.0, positive=text(1),
                         negative=text(2))
    return latent["samples"]


def test_speed_is_an_optional_input_whose_default_is_the_plain_network(nodes, unet_file):
    speed = {i.id: i for i in nodes["DB_LoadUNet"].GET_SCHEMA().inputs}["speed"]
    assert speed.optional and speed.default == "standard" and list(speed.options) == list(SPEEDS) and speed.tooltip
    assert type(load(nodes, unet_file).model.denoiser.network) is UNet  # a workflow saved before the input existed
    fast = load(nodes, unet_file, speed="compiled + CUDA graphs").model.denoiser.network
    assert isinstance(fast, FastUNet) and fast.compiled and fast.cuda_graphs
    with pytest.raises(ValueError, match="speed"):
        load(nodes, unet_file, speed="warp")


def test_sample_through_the_fast_network_equals_the_plain_one(nodes, unet_file):
    plain, fast = load(nodes, unet_file), load(nodes, unet_file, speed="compiled + CUDA graphs")
    for seed in (3, 4):
        assert relative_error(sample(nodes, fast, seed), sample(nodes, plain, seed)) <= TOLERANCE


def test_unloading_drops_what_was_made_and_a_comfyui_patch_is_seen(nodes, unet_file):
    import comfy.model_management

    plain, fast = load(nodes, unet_file), load(nodes, unet_file, speed="compiled")
    network = fast.model.denoiser.network
    sample(nodes, fast)
    made = network.qkv_weights()
    comfy.model_management.unload_all_models()  # ComfyUI frees the memory: the model is detached
    assert network.qkv_weights() is not made
    key = "diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight"  # a LoRA-like difference on the text keys
    patched = []
    for patcher in (plain, fast):  # as a LoRA loader does: a clone of the wire with the patch added
        patched.append(patcher.clone())
        weight = patcher.model.state_dict()[key]
        patched[-1].add_patches({key: (0.3 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(5)),)})
    assert relative_error(sample(nodes, patched[1]), sample(nodes, patched[0])) <= TOLERANCE
    assert relative_error(sample(nodes, patched[1]), sample(nodes, fast)) > 1e-3  # the patch matters
    assert relative_error(sample(nodes, fast), sample(nodes, plain)) <= TOLERANCE  # and is undone for the original


def test_a_patch_applied_in_place_is_seen_too(nodes, unet_file):
    """ComfyUI's weight_inplace_update writes patched values into the same tensors (param.data, version counters
    untouched); ComfyUI detaches the model before it patches it again, which drops the network's prepared weights."""
    plain, fast = load(nodes, unet_file), load(nodes, unet_file, speed="compiled")
    sample(nodes, fast)  # the fast network's text keys and values made from the unpatched weights
    key = "diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight"
    patched = []
    for patcher in (plain, fast):
        patched.append(patcher.clone())
        patched[-1].weight_inplace_update = True
        weight = patcher.model.state_dict()[key]
        patched[-1].add_patches({key: (0.3 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(6)),)})
    assert relative_error(sample(nodes, patched[1]), sample(nodes, patched[0])) <= TOLERANCE
    assert relative_error(sample(nodes, patched[1]), sample(nodes, fast)) > 1e-3


def test_compiling_is_shown_on_the_running_node(nodes, unet_file, monkeypatch):
    import sys
    import types

    from comfy_execution.utils import CurrentNodeContext

    shown = []

    class PromptServer:  # what a running server's module holds
        def send_progress_text(self, text, node_id):
            shown.append((text, node_id))

    PromptServer.instance = PromptServer()
    monkeypatch.setitem(sys.modules, "server", types.SimpleNamespace(PromptServer=PromptServer))
    fast = load(nodes, unet_file, speed="compiled")
    with CurrentNodeContext("prompt", "12"):
        sample(nodes, fast)
        sample(nodes, fast, seed=9)  # the same size: nothing more to compile
    assert len(shown) == 1 and shown[0][1] == "12" and shown[0][0].startswith("compiling the guided step")
