"""Prompt syntax: weights, escapes, windows of 77, embeddings, and what bad input gives."""
import math
import time

import pytest
import torch
from safetensors.torch import save_file

from diffusion_blocks.networks.clip_tokenizer import default_tokenizer
from diffusion_blocks.networks.prompt_syntax import (EmbeddingLibrary, EmbeddingNotFound, parse_weights,
                                                     split_embeddings, tokenize_prompt)
from diffusion_blocks.networks.weights import WeightFileError

START, END = 49406, 49407


def tokens_of(text, pad=END, **options):
    return tokenize_prompt(text, default_tokenizer(), pad, **options)


def content(window):
    """The window's tokens between start and end, as (id, weight)."""
    values = [(t.value, t.weight) for t in window]
    return values[1:[v for v, _ in values].index(END)]


@pytest.mark.parametrize("text, spans", [
    ("a cat", [("a cat", 1.0)]),
    ("(a cat)", [("a cat", 1.1)]),
    ("((a cat))", [("a cat", 1.1 * 1.1)]),
    ("(a cat:1.3) dog", [("a cat", 1.3), (" dog", 1.0)]),
    ("((a:1.5))", [("a", 1.5)]),  # an explicit weight replaces the nesting's
    ("(a (b) c:0.5)", [("a ", 0.5), ("b", 0.5 * 1.1), (" c", 0.5)]),
    ("\\(not a weight\\)", [("(not a weight)", 1.0)]),
    ("(a \\) b)", [("a ) b", 1.1)]),
    ("(a:-0.5)", [("a", -0.5)]),
    ("", []),
])
def test_weights_and_escapes(text, spans):
    parsed, problems = parse_weights(text)
    assert parsed == spans and problems == []


def test_unbalanced_parentheses_are_text_and_reported():
    parsed, problems = parse_weights("a (b c")
    assert parsed == [("a ", 1.0), ("(b c", 1.0)]
    assert "never closed" in problems[0]
    parsed, problems = parse_weights("a) (b)")
    assert "".join(s for s, _ in parsed) == "a) (b)" and all(w == 1.0 for _, w in parsed)
    assert "closes nothing" in problems[0]


def test_weights_that_are_not_numbers_stay_text():
    parsed, problems = parse_weights("(style: cyberpunk) (a:1.2.3)")
    assert parsed == [("style: cyberpunk", pytest.approx(1.1)), (" ", 1.0), ("a:1.2.3", pytest.approx(1.1))]
    assert len(problems) == 2 and "not a number" in problems[0]


@pytest.mark.parametrize("weight", ["inf", "nan", "1e999"])
def test_weights_that_are_not_finite_are_refused(weight):
    with pytest.raises(ValueError, match="not a finite number"):
        parse_weights(f"(a:{weight})")


def test_windows_hold_75_tokens_between_start_end_and_padding():
    prompt = tokens_of("a photo of a cat")
    window, = prompt.windows
    assert len(window) == 77 and window[0].value == START
    assert [t for t, _ in content(window)] == default_tokenizer().encode("a photo of a cat")
    assert all(t.value == END for t in window[6:])
    zero_pad = tokens_of("a photo of a cat", pad=0)
    assert zero_pad.windows[0][6].value == END and all(t.value == 0 for t in zero_pad.windows[0][7:])


def test_empty_prompt_is_one_empty_window():
    window, = tokens_of("").windows
    assert [t.value for t in window] == [START, END] + [END] * 75


def test_long_spans_are_cut_and_short_spans_move_whole():
    long_prompt = tokens_of(" ".join(["cat"] * 200))  # one span of 200 tokens: cut at 75, 75, 50
    assert [len(content(w)) for w in long_prompt.windows] == [75, 75, 50]
    # 74 tokens, then a 3-token span that does not fit: it moves whole to the second window.
    moved = tokens_of(" ".join(["cat"] * 74) + "(red fox dog:1.2)")
    assert [len(content(w)) for w in moved.windows] == [74, 3]
    assert all(w == 1.2 for _, w in content(moved.windows[1]))


def test_ten_thousand_tokens_give_their_windows_quickly():
    started = time.monotonic()
    prompt = tokens_of("(red cat:1.1) " * 5000)  # 10,000 tokens in 5,000 spans of 2
    assert time.monotonic() - started < 5.0
    assert sum(len(content(w)) for w in prompt.windows) == 10_000
    assert len(prompt.windows) == math.ceil(10_000 / 74)  # a 2-token span never straddles: 74 per window


def test_split_embeddings_only_where_a_word_starts():
    assert split_embeddings("a embedding:x b\nembedding:y,c") == ["a", "embedding:x b", "embedding:y,c"]
    assert split_embeddings("notembedding:x") == ["notembedding:x"]
    assert split_embeddings("embedding:x") == ["embedding:x"]


@pytest.fixture
def library(tmp_path):
    generator = torch.Generator().manual_seed(0)
    save_file({"emb_params": torch.randn(2, 768, generator=generator)}, tmp_path / "two.safetensors")
    save_file({"clip_l": torch.randn(1, 768, generator=generator), "clip_g": torch.randn(1, 1280, generator=generator)},
              tmp_path / "sdxl_style.safetensors")
    (tmp_path / "sub").mkdir()
    torch.save({"string_to_param": {"*": torch.randn(3, 768, generator=generator)}, "name": "old", "step": 100},
               tmp_path / "sub" / "a1111.pt")
    save_file({"emb_params": torch.randn(1, 1024, generator=generator)}, tmp_path / "sd2.safetensors")
    (tmp_path.parent / "secret.safetensors").write_bytes(b"")
    return EmbeddingLibrary([tmp_path])


def test_embeddings_become_vectors_with_their_weight(library):
    prompt = tokens_of("a embedding:two b (embedding:sdxl_style:1.3) embedding:a1111", embeddings=library)
    values = prompt.windows[0][1:-1]
    vectors = [t for t in values if isinstance(t.value, torch.Tensor)]
    assert len(vectors) == 2 + 1 + 3
    assert [t.weight for t in vectors] == [1.0, 1.0, 1.3, 1.0, 1.0, 1.0]
    assert "embedding:two" in prompt.spans and "embedding:a1111" in prompt.spans
    g = tokens_of("embedding:sdxl_style", embeddings=library, embedding_key="clip_g", width=1280)
    assert g.windows[0][1].value.shape == (1280,)


def test_text_after_an_embedding_name_is_kept(library):
    ours = tokens_of("embedding:two, red fox", embeddings=library).windows[0]
    text = tokens_of(", red fox").windows[0]
    assert [t.value for t in ours[3:8]] == [t.value for t in text[1:6]]


def test_without_a_library_embedding_is_plain_text():
    assert [t for t, _ in content(tokens_of("embedding:two").windows[0])] == default_tokenizer().encode("embedding:two")


def test_missing_and_mismatched_embeddings_are_clear_errors(library):
    with pytest.raises(EmbeddingNotFound, match="embedding:nothing"):
        tokens_of("a embedding:nothing", embeddings=library)
    with pytest.raises(EmbeddingNotFound):
        tokens_of("embedding:../secret", embeddings=library)  # names never leave the folder
    with pytest.raises(EmbeddingNotFound, match="no name"):
        tokens_of("a embedding:", embeddings=library)
    with pytest.raises(WeightFileError, match="1024 wide; this text encoder needs 768"):
        tokens_of("embedding:sd2", embeddings=library)
