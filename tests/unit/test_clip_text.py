"""The CLIP text transformer against transformers' CLIPTextModel(WithProjection) on identical random weights."""
import pytest
import torch

from diffusion_blocks.networks.clip_text import ARCHITECTURES, ClipTextConfig, ClipTextTransformer, end_positions
from diffusion_blocks.networks.text_encoder_loading import load_text_encoder
from harness.clip_weights import hf_state_dict, openclip_state_dict, random_hf_tower, token_batch
from harness.clip_weights import REDUCED_WIDTH, one_torch_thread  # noqa: F401  (autouse fixture)

FAMILY_OF = {"clip_l": "sd1", "clip_h": "sd2", "clip_g": "sdxl_refiner", "clip_small": "small"}
PAD_OF = {"clip_l": 49407, "clip_h": 0, "clip_g": 0, "clip_small": 49407}


def assert_equal_within(ours, theirs, relative=1e-4):
    """|ours - theirs| <= relative * max|theirs| everywhere (fp32)."""
    scale = theirs.abs().max().item()
    error = (ours - theirs).abs().max().item()
    assert error <= relative * scale, f"max error {error:.3g} against scale {scale:.3g}"


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def towers(request):
    """(architecture, HF model, our tower loaded from the HF names, our tower loaded from the OpenCLIP names)."""
    architecture = request.param
    width = min(REDUCED_WIDTH, ARCHITECTURES[architecture].width)  # the small tower at its real width and heads
    hf = random_hf_tower(architecture, seed=len(architecture) + ord(architecture[-1]), width=width)
    family = FAMILY_OF[architecture]
    from_hf, = load_text_encoder(hf_state_dict(hf), family=family).towers.values()
    from_openclip, = load_text_encoder(openclip_state_dict(hf), family=family).towers.values()
    return architecture, hf, from_hf, from_openclip


def test_every_layer_and_the_pooled_outputs_equal_transformers(towers):
    architecture, hf, ours, _ = towers
    tokens = token_batch(seed=1, pad=PAD_OF[architecture])
    with torch.no_grad():
        reference = hf(input_ids=tokens, output_hidden_states=True)
        states = ours.hidden_states(tokens)
        out = ours(tokens)
    assert len(states) == len(reference.hidden_states) == ARCHITECTURES[architecture].layers + 1
    for ours_state, their_state in zip(states, reference.hidden_states):
        assert_equal_within(ours_state, their_state)
    assert_equal_within(out.hidden, reference.last_hidden_state)
    pooled = reference.last_hidden_state[torch.arange(len(tokens)), end_positions(tokens, 49407)]
    assert_equal_within(out.pooled, pooled)
    assert_equal_within(out.projected, reference.text_embeds)


def test_plain_text_model_pooler_output(towers):
    import transformers

    architecture, hf, ours, _ = towers
    plain = transformers.CLIPTextModel(hf.config).eval()
    wanted = plain.state_dict().keys()  # transformers 5 dropped the `text_model.` level here, 4 had it
    weights = {k: v for k, v in hf.state_dict().items() if not k.startswith("text_projection")}
    weights = {(k if k in wanted else k.removeprefix("text_model.")): v for k, v in weights.items()}
    plain.load_state_dict(weights)
    tokens = token_batch(seed=2, pad=PAD_OF[architecture])
    with torch.no_grad():
        assert_equal_within(ours(tokens).pooled, plain(input_ids=tokens).pooler_output)


@pytest.mark.parametrize("layer", [-2, -4, 0])
@pytest.mark.parametrize("norm_hidden", [True, False])
def test_layer_choice_with_and_without_final_norm(towers, layer, norm_hidden):
    architecture, hf, ours, _ = towers
    tokens = token_batch(seed=3, pad=PAD_OF[architecture])
    with torch.no_grad():
        reference = hf(input_ids=tokens, output_hidden_states=True)
        hidden = ours(tokens, layer=layer, norm_hidden=norm_hidden).hidden
        expected = reference.hidden_states[layer % hf.config.num_hidden_layers + 1]
        expected = hf.text_model.final_layer_norm(expected) if norm_hidden else expected
    assert_equal_within(hidden, expected)


def test_openclip_names_load_the_same_numbers(towers):
    _, _, from_hf, from_openclip = towers
    ours, theirs = from_hf.state_dict(), from_openclip.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def test_layer_out_of_range_is_a_clear_error():
    tower = ClipTextTransformer(ClipTextConfig(width=64, layers=3, heads=1, mlp_width=128, activation="gelu", vocabulary=49408))
    tokens = token_batch(batch=1)
    with pytest.raises(ValueError, match="has 3 layers"):
        tower(tokens, layer=-4)
    with pytest.raises(ValueError, match="at most 77"):
        tower(torch.zeros(1, 78, dtype=torch.long))


def test_end_positions_pick_the_first_end_token():
    tokens = torch.tensor([[49406, 5, 49407, 49407], [49406, 5, 6, 7], [49406, 49407, 0, 0]])
    assert end_positions(tokens, 49407).tolist() == [2, 3, 1]
