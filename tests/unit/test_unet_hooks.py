"""The U-Net's own hook protocol (networks.unet.hooks), no ComfyUI: each point is called where it says, hooks that
do nothing leave the output bit for bit, control residuals equal the same residuals added by hooks, and the fast
network honours hooks and control exactly as the plain one (on its plain path, said once)."""
import logging

import pytest
import torch

from diffusion_blocks.networks.unet import UNet, UNetConfig
from diffusion_blocks.networks.unet.fast import FastUNet
from diffusion_blocks.networks.unet.hooks import Control, UNetHooks
from diffusion_blocks.networks.unet.layers import CrossAttention, ResBlock

pytestmark = pytest.mark.usefixtures("one_thread")  # small networks: see tests/conftest.py

CONFIG = UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1), transformer_depth=(1, 1),
                    transformer_depth_output=(1, 1, 1, 1), context_dim=8, num_heads=2)


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return UNet(CONFIG).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 4, 8, 8, generator=g), torch.tensor([3.0, 700.0]), torch.randn(2, 5, 8, generator=g)


def test_hooks_that_change_nothing_leave_the_output_bit_for_bit(network, inputs):
    same = UNetHooks(emb=[lambda e, s: e], input_block=[lambda h, s: h], input_block_after_skip=[lambda h, s: h],
                     middle_block_after=[lambda state, s: state["h"]], output_block=[lambda h, skip, s: (h, skip)],
                     attn1_input=[lambda n, c, v, s: (n, c, v)], attn2_input=[lambda n, c, v, s: (n, c, v)],
                     attn1_output=[lambda n, s: n], attn2_output=[lambda n, s: n], after_attn1=[lambda x, s: x],
                     layer=[(ResBlock, lambda layer, x, emb, context, s, shape: layer(x, emb))])
    assert same and not UNetHooks() and not Control(input=[None])
    assert torch.equal(network(*inputs, hooks=same), network(*inputs))


def test_attention_replaced_by_its_own_product_is_unchanged(network, inputs):
    own = lambda q, k, v, site: CrossAttention.attend(q, k, v, site.heads)  # noqa: E731
    keys = {("input", 1, 0): own, ("middle", 0): own, ("output", 2): own}
    hooks = UNetHooks(attn1_replace=keys, attn2_replace=dict(keys),
                      attention=lambda default, q, k, v, heads, site: default(q, k, v, heads))
    assert torch.allclose(network(*inputs, hooks=hooks), network(*inputs), rtol=0, atol=1e-6)


def test_each_point_is_called_at_every_block_and_layer_with_where_it_is(network, inputs):
    seen = {"input": [], "output": [], "attn1": [], "replaced": []}
    hooks = UNetHooks(input_block=[lambda h, s: seen["input"].append(s.block) or h],
                      output_block=[lambda h, skip, s: seen["output"].append((s.block, skip.shape[1])) or (h, skip)],
                      attn1_input=[lambda n, c, v, s: seen["attn1"].append(
                          (s.block, s.transformer_index, s.block_index, s.heads, s.activations_shape)) or (n, c, v)],
                      attn2_replace={("output", 1): lambda q, k, v, s: seen["replaced"].append(s.block) or q})
    network(*inputs, hooks=hooks)
    assert seen["input"] == [("input", i) for i in range(len(network.input_blocks))]
    assert [block for block, _ in seen["output"]] == [("output", i) for i in range(len(network.output_blocks))]
    assert [s[:3] for s in seen["attn1"]] == [(("input", 1), 0, 0), (("input", 3), 1, 0), (("middle", 0), 2, 0),
                                             *((("output", i), 3 + i, 0) for i in range(4))]
    assert all(s[3] == CONFIG.num_heads for s in seen["attn1"]) and seen["attn1"][0][4] == [2, 32, 8, 8]
    assert seen["replaced"] == [("output", 1)]


def test_control_residuals_equal_the_same_residuals_added_by_hooks(network, inputs):
    """Input residuals after each input block, middle after the middle block, output ones onto the skips: two
    separate routes through the network give one result."""
    g = torch.Generator().manual_seed(2)
    at_input = {1: torch.randn(2, 32, 8, 8, generator=g), 3: torch.randn(2, 64, 4, 4, generator=g)}
    middle = torch.randn(2, 64, 4, 4, generator=g)
    at_skip = {0: torch.randn(2, 64, 4, 4, generator=g), 3: torch.randn(2, 32, 8, 8, generator=g)}
    control = Control(input=[at_input.get(i) for i in range(4)], middle=[middle],
                      output=[at_skip.get(i) for i in range(4)])
    hooks = UNetHooks(input_block=[lambda h, s: h + at_input.get(s.block[1], 0)],
                      middle_block_after=[lambda state, s: state["h"] + middle],
                      output_block=[lambda h, skip, s: (h, skip + at_skip.get(s.block[1], 0))])
    assert torch.allclose(network(*inputs, control=control), network(*inputs, hooks=hooks), rtol=0, atol=1e-6)
    assert not torch.allclose(network(*inputs, control=control), network(*inputs), atol=1e-3)


def test_the_fast_network_honours_hooks_and_control_as_the_plain_one(network, inputs, caplog):
    fast = FastUNet(network, compiled=True, backend="eager")
    hooks = UNetHooks(attn2_output=[lambda n, s: 1.5 * n], output_block=[lambda h, skip, s: (h, 0.5 * skip)])
    control = Control(middle=[torch.ones(2, 64, 4, 4)])
    with caplog.at_level(logging.WARNING, logger="diffusion_blocks"):
        for _ in range(2):
            assert torch.allclose(fast(*inputs, hooks=hooks), network(*inputs, hooks=hooks), rtol=0, atol=1e-5)
            assert torch.allclose(fast(*inputs, control=control), network(*inputs, control=control), rtol=0,
                                  atol=1e-5)
    assert sum("plain" in r.getMessage() for r in caplog.records) == 1
