"""Our text encoders against ComfyUI 0.3.75's own: tokens, weights, windows, layers, pooled outputs, CONDITIONING.

Two references:
  * the random-weight SD1.x checkpoint (full size, devtools/sd_checkpoint.py) through ComfyUI's
    CheckpointLoader machinery and its CLIPTextEncode / CLIPSetLastLayer nodes;
  * ComfyUI's SD1ClipModel, SD2ClipModel, SDXLClipModel and SDXLRefinerClipModel built in-process at
    reduced width (their config overrides) and given the same random weights as ours.
"""
import random

import pytest
import torch
from safetensors.torch import save_file

from diffusion_blocks.networks.clip_tokenizer import default_tokenizer
from diffusion_blocks.networks.families import FAMILIES
from diffusion_blocks.networks.prompt_syntax import EmbeddingLibrary, tokenize_prompt
from diffusion_blocks.networks.text_encoder_loading import load_text_encoder
from harness.clip_weights import hf_state_dict, openclip_state_dict, random_hf_tower
from harness.clip_weights import one_torch_thread  # noqa: F401  (autouse fixture)

pytestmark = pytest.mark.usefixtures("comfy")

WEIGHTED = "(masterpiece:1.3), ((best quality)), a \\(literal\\) red fox (in the snow:0.7), [not syntax], (((tiny)))"
THREE_WINDOWS = ("a (very detailed:1.2) painting of " + ", ".join(f"(object {i}:{0.6 + 0.05 * (i % 12):.2f})" for i in range(30))
                 + ", " + " ".join(["landscape"] * 40) + ", ((glowing)) \\(escaped\\) end")
PROMPTS = ["a photo of an astronaut riding a horse on mars", WEIGHTED, THREE_WINDOWS, "",
           "a) broken (parentheses (and:x) (weights:1.2.3", "embedding:style a portrait, (embedding:style:1.2) detailed"]


def assert_close(ours, theirs):
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=1e-4, atol=1e-4 * max(1.0, theirs.abs().max().item()))


@pytest.fixture(scope="module")
def embedding_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("embeddings")
    generator = torch.Generator().manual_seed(7)
    save_file({"emb_params": torch.randn(3, 768, generator=generator)}, folder / "style.safetensors")
    save_file({"clip_l": torch.randn(2, 128, generator=generator), "clip_g": torch.randn(2, 192, generator=generator)},
              folder / "small_sdxl.safetensors")
    save_file({"emb_params": torch.randn(2, 128, generator=generator)}, folder / "small.safetensors")
    return folder


# ---- tokens and weights -----------------------------------------------------------------------

def fuzzed_prompts(count=1500, seed=3):
    rng = random.Random(seed)
    alphabet = list("ab c()\\:1.2,") + [" (", ")", ":1.5", ":0.", "xyz", "😀", "Ünï", "\n", "((", "))", "\\(", "\\)",
                                         " embedding:", "long " * 20, "<|endoftext|>"]
    prompts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(count)]
    return prompts + [WEIGHTED, THREE_WINDOWS, "cat " * 10_000, "(red cat:1.1) " * 5000]


@pytest.mark.parametrize("pad, comfy_tokenizer", [(49407, "SDTokenizer"), (0, "SDXLClipGTokenizer")])
def test_tokens_and_weights_equal_comfyui_tokenizer(pad, comfy_tokenizer):
    from comfy import sd1_clip, sdxl_clip

    theirs_tokenizer = getattr(sd1_clip, comfy_tokenizer, None) or getattr(sdxl_clip, comfy_tokenizer)
    theirs_tokenizer = theirs_tokenizer()
    differing = []
    for prompt in fuzzed_prompts():
        ours = [[(t.value, t.weight) for t in w] for w in tokenize_prompt(prompt, default_tokenizer(), pad).windows]
        theirs = theirs_tokenizer.tokenize_with_weights(prompt)
        if ours != theirs:
            differing.append(prompt)
    assert not differing, f"{len(differing)} prompts differ, first: {differing[0]!r}"


def test_embeddings_equal_comfyui_tokenizer(embedding_folder):
    from comfy.sd1_clip import SDTokenizer

    theirs = SDTokenizer(embedding_directory=str(embedding_folder))
    library = EmbeddingLibrary(embedding_folder)
    for prompt in ["embedding:style", "a embedding:style, b", "(embedding:style:1.4) x\nembedding:style"]:
        ours = tokenize_prompt(prompt, default_tokenizer(), 49407, library).windows
        reference = theirs.tokenize_with_weights(prompt)
        assert len(ours) == len(reference)
        for our_window, their_window in zip(ours, reference):
            for token, (value, weight) in zip(our_window, their_window):
                assert token.weight == weight
                assert (torch.equal(token.value, value) if torch.is_tensor(value) else token.value == value)


# ---- full-size SD1.x checkpoint through ComfyUI's own nodes ------------------------------------------

@pytest.fixture(scope="module")
def sd1_checkpoint(embedding_folder):
    """(ComfyUI's CLIP from CheckpointLoader's machinery, our encoder) from the random SD1.x checkpoint."""
    import comfy.sd

    from diffusion_blocks.devtools.sd_checkpoint import sd1_checkpoint_path

    path = sd1_checkpoint_path()
    _, clip, *_ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=False, output_clip=True, output_model=False,
                                                        embedding_directory=str(embedding_folder))
    return clip, load_text_encoder(path)


@pytest.mark.parametrize("prompt", PROMPTS, ids=["plain", "weights+escapes", "three-windows", "empty", "broken", "embedding"])
def test_conditioning_equals_clip_text_encode(sd1_checkpoint, embedding_folder, prompt):
    from nodes import CLIPTextEncode

    clip, ours = sd1_checkpoint
    (theirs,), = [CLIPTextEncode().encode(clip, prompt)]
    cond, pooled = ours.encode(prompt, embeddings=EmbeddingLibrary(embedding_folder))
    assert len(theirs) == 1 and set(theirs[0][1]) == {"pooled_output"}
    assert_close(cond, theirs[0][0])
    assert_close(pooled, theirs[0][1]["pooled_output"])
    if prompt is THREE_WINDOWS:
        assert cond.shape[1] == 3 * 77


@pytest.mark.parametrize("layer", [-2, -12])
def test_clip_skip_equals_clip_set_last_layer(sd1_checkpoint, layer):
    from nodes import CLIPSetLastLayer, CLIPTextEncode

    clip, ours = sd1_checkpoint
    skipped, = CLIPSetLastLayer().set_last_layer(clip, layer)
    (theirs,), = [CLIPTextEncode().encode(skipped, WEIGHTED)]
    cond, pooled = ours.encode(WEIGHTED, layer=layer)
    assert_close(cond, theirs[0][0])
    assert_close(pooled, theirs[0][1]["pooled_output"])


# ---- every family at reduced width, in-process --------------------------------------------------

def reduced(width):
    return {"hidden_size": width, "intermediate_size": 4 * width, "num_attention_heads": width // 64, "projection_dim": width}


def comfy_family(family):
    """(ComfyUI's tokenizer, ComfyUI's model, our encoder) for a family, with identical random weights."""
    from comfy import sd1_clip, sdxl_clip
    from comfy.text_encoders import sd2_clip

    towers = {"l": random_hf_tower("clip_l", seed=31, width=128, projection=128),
              "h": random_hf_tower("clip_h", seed=32, width=128, projection=128),
              "g": random_hf_tower("clip_g", seed=33, width=192, projection=192)}
    options = {"clip_l_model_config": reduced(128), "clip_h_model_config": reduced(128), "clip_g_model_config": reduced(192)}
    comfy_classes = {"sd1": (sd1_clip.SD1Tokenizer, sd1_clip.SD1ClipModel, "l"),
                     "sd2": (sd2_clip.SD2Tokenizer, sd2_clip.SD2ClipModel, "h"),
                     "sdxl": (sdxl_clip.SDXLTokenizer, sdxl_clip.SDXLClipModel, "lg"),
                     "sdxl_refiner": (sdxl_clip.SDXLTokenizer, sdxl_clip.SDXLRefinerClipModel, "g")}
    tokenizer_class, model_class, names = comfy_classes[family]
    model = model_class(dtype=torch.float32, model_options=options)
    for name in names:
        missing, unexpected = model.load_sd(hf_state_dict(towers[name]))
        assert not missing and not unexpected
    state = {}
    for name in names:
        state.update(hf_state_dict(towers[name], f"{name}.") if name != "g" else openclip_state_dict(towers[name], "g."))
    return tokenizer_class, model, load_text_encoder(state, family=family)


@pytest.fixture(scope="module", params=["sd1", "sd2", "sdxl", "sdxl_refiner"])
def family(request):
    return request.param, *comfy_family(request.param)


@pytest.mark.parametrize("layer", [None, -1, -3])
def test_every_family_equals_comfyui_model(family, embedding_folder, layer):
    name, tokenizer_class, model, ours = family
    prompt = THREE_WINDOWS + (" embedding:small_sdxl" if name.startswith("sdxl") else " embedding:small")
    tokens = tokenizer_class(embedding_directory=str(embedding_folder)).tokenize_with_weights(prompt)
    model.reset_clip_options()
    if layer is not None:
        model.set_clip_options({"layer": layer})
    with torch.no_grad():
        theirs, their_pooled = model.encode_token_weights(tokens)[:2]
    cond, pooled = ours.encode(prompt, layer=layer, embeddings=EmbeddingLibrary(embedding_folder))
    assert_close(cond, theirs)
    assert_close(pooled, their_pooled)


def test_openclip_names_of_the_harness_match_comfyui_conversion():
    import comfy.utils

    hf = random_hf_tower("clip_g", seed=5, width=128)
    converted = comfy.utils.clip_text_transformers_convert(openclip_state_dict(hf, "m."), "m.", "")
    expected = hf_state_dict(hf)
    assert set(expected) <= set(converted)
    for key, value in expected.items():
        assert torch.equal(converted[key], value), key


def test_sdxl_vector_condition_equals_comfyui_encode_adm():
    from comfy.ldm.modules.diffusionmodules.openaimodel import Timestep
    from comfy.model_base import SDXL

    class Host:
        embedder = Timestep(256)
        noise_augmentor = None

    pooled = torch.randn(2, 1280)
    sizes = dict(width=1152, height=896, crop_w=64, crop_h=32, target_width=1024, target_height=1024)
    theirs = SDXL.encode_adm(Host(), pooled_output=pooled, **sizes)
    assert_close(FAMILIES["sdxl"].vector_condition(pooled, **sizes), theirs)
