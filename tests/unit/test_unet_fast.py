"""The fast U-Net path (networks.unet.fast, pipeline.fast_step) against the plain network, in fp32 on the CPU.

Every transformation on its own and all together equal the plain UNet within 1e-5; the whole guided step equals
the plain Denoiser with classifier-free guidance; what is made once (text keys and values, fused QKV weights) is
remade when the prompt, the weights or a patch changes; torch.compile runs once per shape, bounded.
"""
import copy
import logging

import pytest
import torch
from torch import nn

from diffusion_blocks.devtools.compare import relative_error
from diffusion_blocks.networks.prediction import Cond, Denoiser
from diffusion_blocks.networks.training_spec import TrainingSpec
from diffusion_blocks.networks.unet import UNet, UNetConfig
from diffusion_blocks.networks.unet.fast import SPEEDS, FastUNet, with_speed
from diffusion_blocks.pipeline import Guided, sample
from diffusion_blocks.samplers import SAMPLERS

pytestmark = pytest.mark.usefixtures("one_thread")  # small networks: see tests/conftest.py

TOLERANCE = 1e-5  # relative to the output's largest magnitude, fp32
SD_LIKE = UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1), transformer_depth=(1, 1),
                     transformer_depth_output=(1, 1, 1, 1), context_dim=8, num_heads=2)
SDXL_LIKE = UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1), transformer_depth=(0, 2),
                       transformer_depth_output=(2, 2, 0, 0), context_dim=16, num_heads=-1, head_channels=16, linear_projection=True,
                       adm_in_channels=12)
TRANSFORMS = ("channels_last", "fused_norms", "fused_qkv", "cached_kv")


def randomized(config, seed=0):
    """A plain network with random weights everywhere (no zero-initialised layers), in eval mode."""
    torch.manual_seed(seed)
    unet = UNet(config).eval()
    with torch.no_grad():
        for name, p in unet.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if p.ndim == 1 and name.endswith("weight") and "norm" in name
                    else torch.randn_like(p) / max(p[0].numel(), 1) ** 0.5)
    return unet


def only(transform):
    """FastUNet options with one transformation on (all of them for None), uncompiled."""
    return {name: transform in (None, name) for name in TRANSFORMS} | {"compiled": False}


def inputs(config, batch=2, size=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, config.in_channels, size, size, generator=g)
    context = torch.randn(batch, 5, config.context_dim, generator=g)
    y = torch.randn(batch, config.adm_in_channels, generator=g) if config.adm_in_channels else None
    return x, torch.tensor([3.0, 700.0])[:batch], context, y


@pytest.mark.parametrize("config", [SD_LIKE, SDXL_LIKE], ids=["sd1_like", "sdxl_like"])
@pytest.mark.parametrize("transform", [*TRANSFORMS, None], ids=[*TRANSFORMS, "all"])
def test_each_transformation_equals_the_plain_network(config, transform):
    unet = randomized(config)
    x, t, context, y = inputs(config)
    with torch.no_grad():
        expected = unet(x, t, context, y)
        fast = FastUNet(copy.deepcopy(unet), **only(transform))
        assert relative_error(fast(x, t, context, y), expected) <= TOLERANCE
        assert relative_error(fast(x, t, context, y), expected) <= TOLERANCE  # again, from what it made once
    assert fast.input_blocks[1][0].in_layers[2].weight.is_contiguous(
        memory_format=torch.channels_last if transform in ("channels_last", None) else torch.contiguous_format)


def test_the_fast_network_is_the_plain_one_under_the_same_names():
    unet = randomized(SD_LIKE)
    fast = FastUNet(unet, compiled=False)
    assert list(fast.state_dict()) == list(unet.state_dict())
    assert all(a is b for a, b in zip(fast.parameters(), unet.parameters()))
    assert with_speed(unet, SPEEDS[0]) is unet
    with pytest.raises(ValueError, match="speed must be one of"):
        with_speed(unet, "ludicrous")


def denoiser_pair(config, prediction):
    """(plain Denoiser, Denoiser on a FastUNet of a copy of the same network)."""
    unet = randomized(config)
    spec = TrainingSpec(prediction=prediction)
    return Denoiser(unet, spec), Denoiser(FastUNet(copy.deepcopy(unet), compiled=False), spec)


@pytest.mark.parametrize("prediction, cfg, quantize", [("eps", 5.0, False), ("v", 3.0, True), ("eps", 1.0, False)])
def test_the_whole_guided_step_equals_the_plain_denoiser(prediction, cfg, quantize):
    plain, fast = denoiser_pair(SDXL_LIKE, prediction)
    plain.quantize = fast.quantize = quantize
    x, _, context, y = inputs(SDXL_LIKE)
    cond, uncond = Cond(context[:1], y[:1]), Cond(torch.zeros(1, 3, SDXL_LIKE.context_dim), torch.zeros_like(y[:1]))
    expected, guided = Guided(plain, cond, uncond, cfg), Guided(fast, cond, uncond, cfg)
    assert guided.fast is not None and expected.fast is None
    for sigma in (14.6, torch.tensor([2.5, 0.3]), 0.0):
        assert relative_error(guided(x * 3, sigma), expected(x * 3, sigma)) <= TOLERANCE


def test_text_keys_and_values_are_made_once_and_remade_when_the_prompt_changes():
    unet = randomized(SD_LIKE)
    fast = FastUNet(copy.deepcopy(unet), compiled=False)
    x, t, context, _ = inputs(SD_LIKE)
    with torch.no_grad():
        assert fast.text_keys_values(context) is fast.text_keys_values(context)  # one sampling run: made once
        fast(x, t, context)
        context.mul_(-2)  # the same tensor, another prompt
        assert relative_error(fast(x, t, context), unet(x, t, context)) <= TOLERANCE
        other = torch.randn_like(context)
        assert relative_error(fast(x, t, other), unet(x, t, other)) <= TOLERANCE


def test_made_weights_are_remade_when_the_weights_change_in_place():
    unet = randomized(SD_LIKE)
    fast = FastUNet(copy.deepcopy(unet), compiled=False)
    x, t, context, _ = inputs(SD_LIKE)
    with torch.no_grad():
        fast(x, t, context)
        for network in (unet, fast):  # a cross-attention key and a self-attention query weight, edited in place
            network.output_blocks[2][1].transformer_blocks[0].attn2.to_k.weight.mul_(3)
            network.input_blocks[1][1].transformer_blocks[0].attn1.to_q.weight.add_(0.5)
        assert relative_error(fast(x, t, context), unet(x, t, context)) <= TOLERANCE
        fast.load_state_dict(randomized(SD_LIKE, seed=7).state_dict())  # new weights copied in
        unet.load_state_dict(randomized(SD_LIKE, seed=7).state_dict())
        assert relative_error(fast(x, t, context), unet(x, t, context)) <= TOLERANCE


def test_made_weights_are_remade_when_a_patch_replaces_a_weight():
    """As ComfyUI's ModelPatcher patches (a LoRA): a new Parameter set in the module's place."""
    unet = randomized(SD_LIKE)
    fast = FastUNet(copy.deepcopy(unet), compiled=False)
    x, t, context, _ = inputs(SD_LIKE)
    with torch.no_grad():
        fast(x, t, context)
        for network in (unet, fast):
            attention = network.middle_block[1].transformer_blocks[0]
            attention.attn2.to_v.weight = nn.Parameter(attention.attn2.to_v.weight + 0.2, requires_grad=False)
            attention.attn1.to_k.weight = nn.Parameter(attention.attn1.to_k.weight * 0.5, requires_grad=False)
        assert relative_error(fast(x, t, context), unet(x, t, context)) <= TOLERANCE


class CountingBackend:
    """A torch.compile backend that counts the graphs it is given and runs them as traced (no code generation)."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return graph_module.forward


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiles_once_per_shape_across_steps_seeds_and_prompts_and_stays_bounded(fresh_dynamo, caplog):
    unet = randomized(SD_LIKE)
    backend, told = CountingBackend(), []
    fast = FastUNet(copy.deepcopy(unet), compiled=True, cuda_graphs=True, backend=backend, max_shapes=2,
                    on_compile=told.append)
    plain, quick = Denoiser(unet), Denoiser(fast)
    sigmas = torch.tensor([10.0, 3.0, 1.0, 0.0])
    uncond = Cond(torch.zeros(1, 5, SD_LIKE.context_dim))

    def run(denoiser, prompt_seed, noise_seed, size=8):
        prompt = Cond(torch.randn(1, 5, SD_LIKE.context_dim, generator=torch.Generator().manual_seed(prompt_seed)))
        latent = torch.zeros(1, 4, size, size)
        return sample(SAMPLERS["dpmpp_2m"], Guided(denoiser, prompt, uncond, 4.0), latent, sigmas, noise_seed).samples

    with caplog.at_level(logging.INFO, logger="diffusion_blocks"):
        for prompt_seed, noise_seed in ((0, 0), (0, 1), (1, 1)):  # steps, another seed, another prompt
            assert relative_error(run(quick, prompt_seed, noise_seed), run(plain, prompt_seed, noise_seed)) <= TOLERANCE
        first = backend.graphs
        assert first == 1 and len(told) == 1  # one graph: no graph breaks and "batch 1 at 8x8" in told[0]
        assert "CUDA graphs need a CUDA device" in caplog.text  # said once, on the CPU
        assert caplog.text.count("CUDA graphs need a CUDA device") == 1
        run(quick, 0, 0, size=16)  # a new size: compiled once more
        assert backend.graphs == 2 * first and len(told) == 2
        assert relative_error(run(quick, 2, 0, size=24), run(plain, 2, 0, size=24)) <= TOLERANCE  # over the bound
        assert backend.graphs == 2 * first and "runs uncompiled" in caplog.text


def test_release_drops_what_was_made():
    fast = FastUNet(randomized(SD_LIKE), compiled=False)
    x, t, context, _ = inputs(SD_LIKE)
    with torch.no_grad():
        fast(x, t, context)
        made = fast.text_keys_values(context), fast.qkv_weights()
        fast.release()
        assert fast.text_keys_values(context) is not made[0] and fast.qkv_weights() is not made[1]
