"""Text Encoder as CLIP and Load LoRA (pack) against ComfyUI's own CLIP and LoraLoader from the same files.

The reference is ComfyUI's CLIPLoader machinery (comfy.sd.load_clip, sized for the small random towers by its
model_config option, which it gives every tower as clip_l's or clip_g's: so both SDXL towers are 128 wide here;
clip_h's own option for SD2) and ComfyUI's nodes: CLIPTextEncode, CLIPTextEncodeSDXL, CLIPSetLastLayer, LoraLoader.
Every comparison also checks that the feature changes the result, so a dropped weight, clip skip or LoRA fails.
"""
import pytest
import torch
from safetensors.torch import save_file

from harness.clip_weights import hf_state_dict, random_hf_tower
from harness.clip_weights import one_torch_thread  # noqa: F401  (autouse fixture)
from harness.nodes import run_node
from harness.unet_twins import random_network

pytestmark = pytest.mark.usefixtures("comfy")

PROMPT = "a (red fox:1.2) in the ((snow)), [winter] \\(photo\\), (blurry:0.8)"
PLAIN = "a red fox in the snow, winter photo, blurry"
WIDTH = 128
FILES = {"sd1": ["clip_l"], "sd2": ["clip_h"], "sdxl": ["clip_l", "clip_g"], "sdxl_refiner": ["clip_g"]}


def reduced(width):
    return {"hidden_size": width, "intermediate_size": 4 * width, "num_attention_heads": width // 64,
            "projection_dim": width}


def assert_same(ours, theirs):
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=1e-5, atol=1e-5 * max(1.0, theirs.abs().max().item()))


def differs(a, b):
    return (a - b).abs().max().item() > 1e-3 * b.abs().max().item()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """ComfyUI's text_encoders and loras folders extended with small random CLIP towers (and LoRAs, written later)."""
    import folder_paths

    base = tmp_path_factory.mktemp("native_clip")
    for folder in ("text_encoders", "loras"):
        (base / folder).mkdir()
        folder_paths.add_model_folder_path(folder, str(base / folder))
    for seed, tower in enumerate("lgh"):
        model = random_hf_tower(f"clip_{tower}", seed=50 + seed, width=WIDTH, projection=WIDTH)
        save_file(hf_state_dict(model), base / "text_encoders" / f"clip_{tower}.safetensors")
    save_file(hf_state_dict(random_hf_tower("clip_l", seed=53, width=WIDTH, projection=96)),
              base / "text_encoders" / "narrow_projection.safetensors")
    yield base
    for folder in ("text_encoders", "loras"):  # leave ComfyUI's folders as other tests expect them
        folder_paths.folder_names_and_paths[folder][0].remove(str(base / folder))


@pytest.fixture(scope="module", params=list(FILES))
def family(request, folders, pack_nodes):
    """(family, ComfyUI's own CLIP from the files, the pack's DB_TEXT_ENCODER wire of the same files)."""
    import comfy.sd
    import folder_paths

    names = FILES[request.param]
    options = {"model_config": reduced(WIDTH), "clip_h_model_config": reduced(WIDTH), "dtype": torch.float32}
    theirs = comfy.sd.load_clip([str(folders / "text_encoders" / f"{n}.safetensors") for n in names],
                                embedding_directory=folder_paths.get_folder_paths("embeddings"), model_options=options)
    second = f"text_encoders/{names[1]}.safetensors" if len(names) > 1 else "none"
    ours, = run_node(pack_nodes["DB_LoadTextEncoder"], file=f"text_encoders/{names[0]}.safetensors", second_file=second,
                     family=request.param, dtype="float32")
    return request.param, theirs, ours


def encode(clip, text):
    from nodes import CLIPTextEncode

    (cond, extra), = CLIPTextEncode().encode(clip, text)[0]
    return cond, extra["pooled_output"]


def as_clip(pack_nodes, text_encoder):
    clip, = run_node(pack_nodes["DB_TextEncoderAsCLIP"], text_encoder=text_encoder)
    return clip


def test_schemas_follow_the_house_style(pack_nodes):
    for node_id in ("DB_TextEncoderAsCLIP", "DB_LoraLoader"):
        schema = pack_nodes[node_id].GET_SCHEMA()
        assert schema.category.startswith("diffusion_blocks/") and schema.description and schema.display_name
        assert all(item.tooltip for item in [*schema.inputs, *schema.outputs]), node_id


def test_clip_text_encode_equals_comfyuis_clip(pack_nodes, family):
    """Tokens, (weights:1.2) syntax, windows and pooled output are ComfyUI's; the pack's own Encode Text agrees."""
    from diffusion_blocks.nodes.native_clip import COMFY_CLIPS

    name, theirs, ours = family
    clip = as_clip(pack_nodes, ours)
    expected = encode(theirs, PROMPT)
    for got in (encode(clip, PROMPT), encode(clip, PROMPT)):  # the second run on ComfyUI's loaded model
        assert_same(got[0], expected[0])
        assert_same(got[1], expected[1])
    assert differs(encode(theirs, PLAIN)[0], expected[0])  # the weights matter
    tower, comfy_tower = next(iter(COMFY_CLIPS[name][2].items()))
    k_proj = clip.cond_stage_model.state_dict()[f"{comfy_tower}.transformer.text_model.encoder.layers.3.self_attn."
                                                "k_proj.weight"]
    qkv = ours.encoder.towers[tower].blocks[3].attn.qkv.weight
    assert k_proj.data_ptr() == qkv[WIDTH:].data_ptr()  # shared, not copied
    (cond, extra), = run_node(pack_nodes["DB_EncodeText"], text_encoder=ours, text=PROMPT, stop_at_clip_layer=0)[0]
    assert_same(cond, expected[0])


def test_clip_set_last_layer_equals_comfyuis(pack_nodes, family):
    from nodes import CLIPSetLastLayer

    _, theirs, ours = family
    skipped = CLIPSetLastLayer().set_last_layer(as_clip(pack_nodes, ours), -3)[0]
    expected = encode(CLIPSetLastLayer().set_last_layer(theirs, -3)[0], PROMPT)
    assert_same(encode(skipped, PROMPT)[0], expected[0])
    assert_same(encode(skipped, PROMPT)[1], expected[1])
    assert differs(encode(theirs, PROMPT)[0], expected[0])  # the layer matters


@pytest.mark.parametrize("family", ["sdxl"], indirect=True)
def test_clip_text_encode_sdxl_equals_comfyuis(pack_nodes, family):
    from comfy_extras.nodes_clip_sdxl import CLIPTextEncodeSDXL

    _, theirs, ours = family
    sizes = dict(width=1152, height=896, crop_w=32, crop_h=64, target_width=1024, target_height=1024)
    (got, got_extra), = CLIPTextEncodeSDXL.execute(as_clip(pack_nodes, ours), text_g=PROMPT, text_l=PLAIN,
                                                   **sizes).result[0]
    (expected, extra), = CLIPTextEncodeSDXL.execute(theirs, text_g=PROMPT, text_l=PLAIN, **sizes).result[0]
    assert_same(got, expected)
    assert_same(got_extra.pop("pooled_output"), extra.pop("pooled_output"))
    assert got_extra == extra
    assert differs(encode(theirs, PROMPT)[0], expected)  # text_l matters


# ---- LoRA --------------------------------------------------------------------------------------------------------


def random_lora(key_map, weights, prefixes, seed, rank=4):
    """A kohya LoRA of random weights on every 2-D weight whose LoRA name starts with one of the prefixes."""
    generator = torch.Generator().manual_seed(seed)
    lora = {}
    for name, target in sorted(key_map.items()):
        shape = weights[target].shape if isinstance(target, str) and target in weights else ()
        if name.startswith(prefixes) and len(shape) == 2:
            lora[f"{name}.lora_down.weight"] = torch.randn(rank, shape[1], generator=generator) / shape[1] ** 0.5
            lora[f"{name}.lora_up.weight"] = torch.randn(shape[0], rank, generator=generator) * 0.5
            lora[f"{name}.alpha"] = torch.tensor(float(rank))
    return lora


@pytest.fixture(scope="module")
def unet(comfy):
    from diffusion_blocks.nodes.unet_nodes import unet_wire

    return unet_wire(random_network(seed=3))


@pytest.fixture(scope="module")
def lora_name(family, unet, folders):
    """A LoRA file on the U-Net's attention and the family's text towers, by ComfyUI's own key maps."""
    import comfy.lora

    name, theirs, _ = family
    clip_keys = comfy.lora.model_lora_keys_clip(theirs.cond_stage_model, {})
    unet_keys = comfy.lora.model_lora_keys_unet(unet.model, {})
    lora = random_lora(clip_keys, theirs.cond_stage_model.state_dict(), ("lora_te1_", "lora_te2_") if name == "sdxl"
                       else ("lora_te_",), seed=5)
    lora |= random_lora(unet_keys, unet.model.state_dict(), ("lora_unet_input_blocks_1_1_",), seed=6)
    save_file(lora, folders / "loras" / f"{name}.safetensors")
    return f"{name}.safetensors"


def weights_of(model):
    """The U-Net's weights as ComfyUI loads them for sampling (its patches applied)."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([model])
    return {k: v.clone() for k, v in model.model.diffusion_model.state_dict().items()}


def test_lora_equals_comfyuis_lora_loader(pack_nodes, family, unet, lora_name):
    """Load LoRA (pack) on the U-Net and text encoder gives LoraLoader's result on ComfyUI's MODEL and CLIP: the same
    patched U-Net weights, the same conditioning through the pack's Encode Text and through Text Encoder as CLIP."""
    from nodes import LoraLoader

    _, theirs, ours = family
    model, = run_node(pack_nodes["DB_NoisePredictorAsModel"], unet=unet)
    their_model, their_clip = LoraLoader().load_lora(model, theirs, lora_name, 0.7, 0.9)
    lora_unet, lora_encoder = run_node(pack_nodes["DB_LoraLoader"], unet=unet, lora_name=lora_name, strength_unet=0.7,
                                       strength_text_encoder=0.9, text_encoder=ours)
    expected = encode(their_clip, PROMPT)
    assert differs(encode(theirs, PROMPT)[0], expected[0]) and differs(encode(theirs, PROMPT)[1], expected[1])
    got = encode(as_clip(pack_nodes, lora_encoder), PROMPT)
    assert_same(got[0], expected[0])
    assert_same(got[1], expected[1])
    (cond, extra), = run_node(pack_nodes["DB_EncodeText"], text_encoder=lora_encoder, text=PROMPT,
                              stop_at_clip_layer=0)[0]
    assert_same(cond, expected[0])
    assert_same(extra["pooled_output"], expected[1])
    assert_same(encode(as_clip(pack_nodes, ours), PROMPT)[0], encode(theirs, PROMPT)[0])  # the shared weights are clean

    expected_weights, plain = weights_of(their_model), weights_of(model)
    patched = weights_of(run_node(pack_nodes["DB_NoisePredictorAsModel"], unet=lora_unet)[0])
    assert any(differs(expected_weights[k], plain[k]) for k in plain)
    for key, value in expected_weights.items():
        assert torch.equal(patched[key], value), key


def test_lora_without_text_encoder_patches_the_unet_only(pack_nodes, family, unet, lora_name):
    lora_unet, text_encoder = run_node(pack_nodes["DB_LoraLoader"], unet=unet, lora_name=lora_name, strength_unet=1.0,
                                       strength_text_encoder=1.0)
    assert text_encoder is None and lora_unet.patches and not unet.patches


def test_a_lora_nothing_of_which_fits_is_an_error_naming_it(pack_nodes, family, unet, folders):
    name, _, ours = family
    save_file({"lora_unet_elsewhere.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_elsewhere.lora_up.weight": torch.zeros(8, 4)}, folders / "loras" / "elsewhere.safetensors")
    with pytest.raises(ValueError, match=r"^lora_name: none of the 2 tensors of elsewhere.safetensors fit this U-Net"):
        run_node(pack_nodes["DB_LoraLoader"], unet=unet, lora_name="elsewhere.safetensors", strength_unet=1.0,
                 strength_text_encoder=1.0, text_encoder=ours)


# ---- the pack's own model, and what ComfyUI's CLIP cannot hold --------------------------------------------------


def test_the_bundled_models_encoder_as_clip_equals_encode_text(pack_nodes):
    """ComfyUI has no loader for the small model's 64-wide tower; its CLIP reads it as SD1 reads CLIP-L, which is
    what the pack's own Encode Text (itself ComfyUI's equal on SD1, test_text_parity) does."""
    from nodes import CLIPSetLastLayer

    loaded, = run_node(pack_nodes["DB_LoadTextEncoder"], file="diffusion_blocks/diffusion_blocks_shapes.safetensors",
                       second_file="none", family="auto", dtype="float32")
    clip = as_clip(pack_nodes, loaded)
    for layer, native in ((0, clip), (-2, CLIPSetLastLayer().set_last_layer(clip, -2)[0])):
        (cond, extra), = run_node(pack_nodes["DB_EncodeText"], text_encoder=loaded, text=PROMPT,
                                  stop_at_clip_layer=layer)[0]
        assert_same(encode(native, PROMPT)[0], cond)
        assert_same(encode(native, PROMPT)[1], extra["pooled_output"])


def test_a_tower_comfyuis_clip_cannot_hold_is_refused(pack_nodes, folders):
    loaded, = run_node(pack_nodes["DB_LoadTextEncoder"], file="text_encoders/narrow_projection.safetensors",
                       second_file="none", family="sd1", dtype="float32")
    with pytest.raises(ValueError, match=r"^text_encoder: its l tower .* cannot be held by ComfyUI's CLIP"):
        as_clip(pack_nodes, loaded)


@pytest.mark.parametrize("family", ["sd1"], indirect=True)
def test_a_weight_patch_without_a_comfyui_name_is_refused(pack_nodes, family):
    """A patch on the whole fused q, k, v (ComfyUI's CLIP has three tensors there) is not dropped silently."""
    from diffusion_blocks.nodes.wires import LoadedTextEncoder

    _, _, ours = family
    tower = next(iter(ours.encoder.towers))
    key = f"towers.{tower}.blocks.0.attn.qkv.weight"
    patcher = ours.patcher.clone()
    patcher.add_patches({key: ("diff", (torch.ones(3 * WIDTH, WIDTH),))}, 0.1)
    with pytest.raises(ValueError, match=rf"^text_encoder: carries a weight patch on {key} that ComfyUI's CLIP has no"):
        as_clip(pack_nodes, LoadedTextEncoder(ours.encoder, patcher, ours.name))


def test_a_full_size_sd1_checkpoint_equals_checkpoint_loaders_clip(pack_nodes, unet, folders):
    """At full size from a checkpoint (no text projection in the file): CheckpointLoader's CLIP, with a LoRA on every
    layer of its text encoder through LoraLoader, and the pack's encoder through Text Encoder as CLIP and Load LoRA."""
    import comfy.lora
    import comfy.sd
    import folder_paths
    from nodes import LoraLoader

    from diffusion_blocks.devtools.sd_checkpoint import sd1_checkpoint_path

    path = sd1_checkpoint_path()
    _, theirs, *_ = comfy.sd.load_checkpoint_guess_config(
        str(path), output_vae=False, output_clip=True, output_model=False,
        embedding_directory=folder_paths.get_folder_paths("embeddings"), te_model_options={"dtype": torch.float32})
    (folders / "checkpoints").mkdir(exist_ok=True)
    (folders / "checkpoints" / "random_sd1.safetensors").symlink_to(path)
    folder_paths.add_model_folder_path("checkpoints", str(folders / "checkpoints"))
    try:
        ours, = run_node(pack_nodes["DB_LoadTextEncoder"], file="checkpoints/random_sd1.safetensors",
                         second_file="none", family="auto", dtype="float32")
    finally:
        folder_paths.folder_names_and_paths["checkpoints"][0].remove(str(folders / "checkpoints"))
    expected = encode(theirs, PROMPT)
    assert_same(encode(as_clip(pack_nodes, ours), PROMPT)[0], expected[0])
    assert_same(encode(as_clip(pack_nodes, ours), PROMPT)[1], expected[1])

    lora = random_lora(comfy.lora.model_lora_keys_clip(theirs.cond_stage_model, {}),
                       theirs.cond_stage_model.state_dict(), ("lora_te_",), seed=8)
    save_file(lora, folders / "loras" / "full_size_te.safetensors")
    model, = run_node(pack_nodes["DB_NoisePredictorAsModel"], unet=unet)
    _, their_clip = LoraLoader().load_lora(model, theirs, "full_size_te.safetensors", 1.0, 0.6)
    _, lora_encoder = run_node(pack_nodes["DB_LoraLoader"], unet=unet, lora_name="full_size_te.safetensors",
                               strength_unet=1.0, strength_text_encoder=0.6, text_encoder=ours)
    expected_lora = encode(their_clip, PROMPT)
    assert differs(expected_lora[0], expected[0])
    assert_same(encode(as_clip(pack_nodes, lora_encoder), PROMPT)[0], expected_lora[0])
