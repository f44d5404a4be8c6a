"""Prompt -> conditioning: windows, weights, embeddings, layer choice, SDXL's two towers and size vector."""
import math

import pytest
import torch
from safetensors.torch import save_file

from diffusion_blocks.networks.clip_text import END_TOKEN, START_TOKEN
from diffusion_blocks.networks.prompt_syntax import EmbeddingLibrary
from diffusion_blocks.networks.sdxl_conditioning import fourier_features, sdxl_vector
from diffusion_blocks.networks.text_encoder import TextEncoder
from diffusion_blocks.networks.text_encoder_loading import load_text_encoder
from harness.clip_weights import hf_state_dict, random_hf_tower
from harness.clip_weights import one_torch_thread  # noqa: F401  (autouse fixture)

THREE_WINDOWS = ", ".join(f"tag{i}" for i in range(50))  # 50 x (2 or 3 tokens) + commas: three windows


@pytest.fixture(scope="module")
def sd1():
    return load_text_encoder(hf_state_dict(random_hf_tower("clip_l", seed=21)), family="sd1")


@pytest.fixture(scope="module")
def sdxl():
    state = {**hf_state_dict(random_hf_tower("clip_l", seed=22), "l."),
             **hf_state_dict(random_hf_tower("clip_g", seed=23, width=192), "g.")}
    return load_text_encoder(state, family="sdxl")


def run(tower, tokens, **options):
    with torch.no_grad():
        return tower(torch.tensor([tokens]), **options)


def test_windows_are_encoded_apart_and_concatenated(sd1):
    tokens = sd1.tokenize(THREE_WINDOWS)["l"]
    assert len(tokens.windows) == 3
    cond, pooled = sd1.encode(THREE_WINDOWS)
    assert cond.shape == (1, 3 * 77, 128) and pooled.shape == (1, 128)
    tower = sd1.towers["l"]
    for index, window in enumerate(tokens.windows):
        alone = run(tower, [t.value for t in window])
        torch.testing.assert_close(cond[:, 77 * index: 77 * (index + 1)], alone.hidden, rtol=1e-5, atol=1e-5)
    first = run(tower, [t.value for t in tokens.windows[0]])
    torch.testing.assert_close(pooled, first.pooled, rtol=1e-5, atol=1e-5)  # SD1: the unprojected pooled output


def test_a_weight_scales_the_difference_from_the_empty_prompt(sd1):
    weighted, _ = sd1.encode("a (red:1.5) fox")
    plain, _ = sd1.encode("a red fox")
    empty = run(sd1.towers["l"], [START_TOKEN, END_TOKEN] + [END_TOKEN] * 75).hidden
    expected = plain.clone()
    expected[:, 2] = (plain[:, 2] - empty[:, 2]) * 1.5 + empty[:, 2]
    torch.testing.assert_close(weighted, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(weighted[:, 1], plain[:, 1])  # weight 1: untouched


def test_an_embedding_equal_to_a_token_row_encodes_like_the_token(sd1, tmp_path):
    tokenizer, tower = sd1.tokenizer, sd1.towers["l"]
    fox, = tokenizer.encode("fox")
    save_file({"emb_params": tower.token_embedding.weight[fox][None].clone()}, tmp_path / "fox_vector.safetensors")
    library = EmbeddingLibrary(tmp_path)
    ours, pooled = sd1.encode("a red embedding:fox_vector", embeddings=library)
    reference, reference_pooled = sd1.encode("a red fox")
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled, reference_pooled, rtol=1e-5, atol=1e-5)


def test_layer_choice_overrides_the_family_default(sd1):
    tower = sd1.towers["l"]
    window = [t.value for t in sd1.tokenize("a red fox")["l"].windows[0]]
    cond, _ = sd1.encode("a red fox", layer=-2)
    torch.testing.assert_close(cond, run(tower, window, layer=-2, norm_hidden=True).hidden, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="has 12 layers"):
        sd1.encode("a red fox", layer=-13)


def test_sdxl_concatenates_penultimate_layers_and_pools_big_g(sdxl):
    cond, pooled = sdxl.encode("a red fox, (snow:0.8)")
    assert cond.shape == (1, 77, 128 + 192) and pooled.shape == (1, 96)
    g_window = [t.value for t in sdxl.tokenize("a red fox, snow")["g"].windows[0]]
    assert g_window[-1] == 0  # bigG pads with 0, CLIP-L with the end token
    reference = run(sdxl.towers["g"], g_window, layer=-2, norm_hidden=False)
    torch.testing.assert_close(pooled, reference.projected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cond[:, :5, 128:], reference.hidden[:, :5], rtol=1e-5, atol=1e-5)


def test_empty_and_huge_prompts(sd1):
    cond, pooled = sd1.encode("")
    assert cond.shape == (1, 77, 128) and torch.isfinite(cond).all()
    huge, _ = sd1.encode("cat " * 10_000)  # 10,000 tokens: 134 windows
    assert huge.shape == (1, 77 * math.ceil(10_000 / 75), 128) and torch.isfinite(huge).all()


def test_family_needs_its_towers(sd1):
    with pytest.raises(ValueError, match="sdxl needs the tower"):
        TextEncoder("sdxl", {"l": sd1.towers["l"]})


def test_sdxl_vector_is_pooled_then_six_fourier_features():
    pooled = torch.randn(2, 1280)
    y = sdxl_vector(pooled, width=1024, height=768, crop_w=16, crop_h=32, target_width=896, target_height=640)
    assert y.shape == (2, 2816)
    assert torch.equal(y[:, :1280], pooled)
    half = torch.arange(128, dtype=torch.float32) / 128
    for index, value in enumerate([768, 1024, 32, 16, 640, 896]):
        angles = value * torch.exp(-math.log(10_000) * half)
        expected = torch.cat([torch.cos(angles), torch.sin(angles)])
        torch.testing.assert_close(y[0, 1280 + 256 * index: 1280 + 256 * (index + 1)], expected)
    assert torch.equal(fourier_features([0.0])[0, :128], torch.ones(128))
