"""ComfyUI's U-Net protocol on the pack's U-Net: every patch node, LoRA format, merge, ControlNet and patch point of
ComfyUI's own U-Net gives ComfyUI's result on ours.

Each test samples a few steps with ComfyUI's KSampler core on two MODELs of the same weights, the pack's U-Net and
ComfyUI's own UNetModel (harness.unet_twins), both patched the same way: the latents agree (fp32, relative L2 within
TOLERANCE) and the patch changes ComfyUI's latent by far more than that, so a dropped patch fails.
"""
import inspect

import pytest
import torch
from harness.control_models import small_control_lora, small_controlnet, small_t2i_adapter
from harness.nodes import run_comfy_node as run
from harness.unet_twins import SD1_LIKE, SDXL_LIKE, prompts, random_network, relative_l2, sample, twins

TOLERANCE = 2e-3  # relative L2, fp32 (the bar; the unpatched twins agree to ~1e-6)
CHANGED = 5 * TOLERANCE  # what a patch must do to ComfyUI's own latent for its test to mean anything


@pytest.fixture(scope="module")
def pair(comfy, one_thread):
    return twins()


@pytest.fixture(scope="module")
def conditioning(comfy):
    return prompts()


@pytest.fixture(scope="module")
def sdxl_pair(comfy, one_thread):
    return twins(SDXL_LIKE)


def assert_same_result(patch, pair, conditioning, size=16, **sampling):
    """`patch(model) -> model` applied to both twins: the same latent, and not the unpatched one."""
    ours, theirs = pair
    expected = sample(patch(theirs), *conditioning, size=size, **sampling)
    got = sample(patch(ours), *conditioning, size=size, **sampling)
    assert relative_l2(got, expected) <= TOLERANCE
    assert relative_l2(sample(theirs, *conditioning, size=size, **sampling), expected) > CHANGED


def comfy_has(module_name, text):
    """Whether this ComfyUI's source of a module mentions `text` (a patch point newer than 0.3.75)."""
    import importlib

    return text in inspect.getsource(importlib.import_module(module_name))


# ---- the network's names, classes and config, where ComfyUI and packs look for them ----------------------------

@pytest.mark.parametrize("layout", ["pair", "sdxl_pair"])
def test_lora_key_maps_are_comfyuis_own(layout, request, comfy):
    """Every LoRA name ComfyUI resolves on its own U-Net (kohya, diffusers, PEFT-style, LyCORIS, plain) resolves to
    the same weight on ours: the maps are equal, entry for entry (SD1.x and SDXL layouts)."""
    import comfy.lora

    pair = request.getfixturevalue(layout)
    ours, theirs = (comfy.lora.model_lora_keys_unet(m.model, {}) for m in pair)
    assert ours == theirs and len(ours) > 1000
    weights = {k for k in pair[0].model.state_dict() if k.startswith("diffusion_model.") and k.endswith(".weight")}
    assert weights <= set(ours.values())


def test_blocks_are_found_by_module_path_and_class_name(pair):
    classes = ("BasicTransformerBlock", "SpatialTransformer", "ResBlock", "CrossAttention")
    found = [{(name, type(m).__name__) for name, m in model.model.diffusion_model.named_modules()
              if type(m).__name__ in classes} for model in pair]
    assert found[0] == found[1] and len(found[0]) > 40
    attention = dict(pair[0].model.diffusion_model.named_modules())["input_blocks.4.1.transformer_blocks.0.attn2"]
    assert all(hasattr(attention, name) for name in ("to_q", "to_k", "to_v", "to_out", "heads"))


@pytest.mark.parametrize("layout", ["pair", "sdxl_pair"])
def test_unet_config_is_what_comfyui_detects_for_these_weights(layout, request, comfy):
    import comfy.model_detection

    pair = request.getfixturevalue(layout)
    state = pair[1].model.diffusion_model.state_dict()
    detected = comfy.model_detection.detect_unet_config(state, "")
    ours = pair[0].model.model_config.unet_config
    for key in ("model_channels", "num_res_blocks", "channel_mult", "transformer_depth", "transformer_depth_output",
                "transformer_depth_middle", "context_dim", "use_linear_in_transformer", "in_channels",
                "adm_in_channels"):
        assert ours[key] == detected[key], key


# ---- patch nodes of ComfyUI's core ------------------------------------------------------------------------------

def core_patch(module, node, **inputs):
    def patch(model):
        import importlib

        return run(getattr(importlib.import_module(module), node), model=model, **inputs)
    return patch


CORE_PATCHES = {
    "FreeU": (core_patch("comfy_extras.nodes_freelunch", "FreeU", b1=1.3, b2=1.4, s1=0.9, s2=0.2), {}),
    "FreeU_V2": (core_patch("comfy_extras.nodes_freelunch", "FreeU_V2", b1=1.3, b2=1.4, s1=0.9, s2=0.2), {}),
    "PerturbedAttentionGuidance": (core_patch("comfy_extras.nodes_pag", "PerturbedAttentionGuidance", scale=10.0), {}),
    "SelfAttentionGuidance": (core_patch("comfy_extras.nodes_sag", "SelfAttentionGuidance", scale=2.0,
                                         blur_sigma=2.0), {}),
    "HyperTile": (core_patch("comfy_extras.nodes_hypertile", "HyperTile", tile_size=256, swap_size=2, max_depth=0,
                             scale_depth=False), {"size": 64, "steps": 1}),
    "PatchModelAddDownscale": (core_patch("comfy_extras.nodes_model_downscale", "PatchModelAddDownscale",
                                          block_number=3, downscale_factor=2.0, start_percent=0.0, end_percent=0.7,
                                          downscale_after_skip=True, downscale_method="bicubic",
                                          upscale_method="bicubic"), {}),
    "TomePatchModel": (core_patch("comfy_extras.nodes_tomesd", "TomePatchModel", ratio=0.5), {"size": 32}),
    "UNetSelfAttentionMultiply": (core_patch("comfy_extras.nodes_attention_multiply", "UNetSelfAttentionMultiply",
                                             q=1.5, k=1.2, v=0.7, out=1.3), {}),
    "UNetCrossAttentionMultiply": (core_patch("comfy_extras.nodes_attention_multiply", "UNetCrossAttentionMultiply",
                                              q=1.5, k=1.2, v=0.7, out=1.3), {}),
}


@pytest.mark.parametrize("name", list(CORE_PATCHES))
def test_core_patch_nodes_give_comfyuis_result(name, pair, conditioning):
    patch, sampling = CORE_PATCHES[name]
    assert_same_result(patch, pair, conditioning, **sampling)


# ---- weights: LoRA files of every format, merges, object patches ------------------------------------------------

def lora_file(model, generator, rank=4):
    """A LoRA state dict of random weights in every format ComfyUI reads, each on another weight, by names of each
    style in ComfyUI's key map (kohya LDM and diffusers names, diffusers processor names, LyCORIS, plain)."""
    import comfy.lora

    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    weights = model.model.state_dict()

    def name(prefix, contains):
        return next(k for k, v in key_map.items() if k.startswith(prefix) and contains in k
                    and weights[v].ndim == 2 and weights[v].shape[0] % 2 == 0 and weights[v].shape[1] % 2 == 0)

    def r(*shape):
        return 0.3 * torch.randn(*shape, generator=generator)

    lora = {}
    target = weights[key_map[kohya := name("lora_unet_down_blocks", "attn1_to_q")]].shape
    lora.update({f"{kohya}.lora_down.weight": r(rank, target[1]), f"{kohya}.lora_up.weight": r(target[0], rank),
                 f"{kohya}.alpha": torch.tensor(2.0)})
    target = weights[key_map[ldm := name("lora_unet_input_blocks", "attn2_to_k")]].shape
    lora.update({f"{ldm}.lora_down.weight": r(rank, target[1]), f"{ldm}.lora_up.weight": r(target[0], rank)})
    target = weights[key_map[peft := name("unet.up_blocks", "ff.net.2")]].shape
    lora.update({f"{peft}.lora_A.weight": r(rank, target[1]), f"{peft}.lora_B.weight": r(target[0], rank)})
    target = weights[key_map[loha := name("lora_unet_mid_block", "attn2_to_v")]].shape
    lora.update({f"{loha}.hada_w1_a": r(target[0], rank), f"{loha}.hada_w1_b": r(rank, target[1]),
                 f"{loha}.hada_w2_a": r(target[0], rank), f"{loha}.hada_w2_b": r(rank, target[1]),
                 f"{loha}.alpha": torch.tensor(float(rank))})
    target = weights[key_map[lokr := name("lycoris_up_blocks", "attn1_to_out_0")]].shape
    lora.update({f"{lokr}.lokr_w1": r(2, 2), f"{lokr}.lokr_w2": r(target[0] // 2, target[1] // 2)})
    full = next(k for k in key_map if k.startswith("diffusion_model.output_blocks") and k.endswith("in_layers.2"))
    lora[f"{full}.diff"] = r(*weights[key_map[full]].shape)
    return lora


def test_lora_files_of_every_format_give_comfyuis_result(pair, conditioning):
    import comfy.sd

    lora = lora_file(pair[1], torch.Generator().manual_seed(3))

    def patch(model):
        patched, _ = comfy.sd.load_lora_for_models(model, None, lora, 0.8, 0.0)
        assert len(patched.patches) == 6  # every entry found a weight
        return patched

    assert_same_result(patch, pair, conditioning)


def test_model_merge_with_a_comfyui_checkpoint_gives_comfyuis_result(pair, conditioning):
    import comfy_extras.nodes_model_merging as merging

    _, other = twins(seed=7)
    assert_same_result(lambda model: run(merging.ModelMergeSimple, model1=model, model2=other, ratio=0.4), pair,
                       conditioning)


def test_an_object_patch_on_a_block_found_by_class_name_gives_comfyuis_result(pair, conditioning):
    def patch(model):
        found = next(name for name, m in model.model.diffusion_model.named_modules()
                     if type(m).__name__ == "CrossAttention" and name.endswith("attn2") and name.startswith("input"))
        original = random_network().state_dict()[f"{found}.to_v.weight"]  # the twins' weights, unpatched
        louder = torch.nn.Linear(original.shape[1], original.shape[0], bias=False).requires_grad_(False)
        louder.weight.copy_(2.0 * original)
        patched = model.clone()
        patched.add_object_patch(f"diffusion_model.{found}.to_v", louder)
        return patched

    assert_same_result(patch, pair, conditioning)


# ---- patches written against ComfyUI's U-Net: every point it offers -------------------------------------------

def with_patch(setter, *args):
    def patch(model):
        patched = model.clone()
        getattr(patched, setter)(*args)
        return patched
    return patch


def scaled_in(block, factor):
    return lambda h, options: h * factor if options["block"] == block else h


def ip_adapter_like(extra_tokens):
    """An attn2 replacement as IPAdapter's: the text's attention plus attention to extra (image) tokens."""
    from comfy.ldm.modules.attention import optimized_attention

    def attention(q, k, v, extra_options):
        heads = extra_options["n_heads"]
        image = extra_tokens[..., :q.shape[-1]].expand(q.shape[0], -1, -1)
        return optimized_attention(q, k, v, heads) + 0.7 * optimized_attention(q, image, image.flip(-1), heads)
    return attention


def checked_attn1_patch(n, context, value, extra_options):
    assert {"n_heads", "dim_head", "block", "block_index", "original_shape", "cond_or_uncond", "sigmas",
            "transformer_index", "activations_shape"} <= set(extra_options)
    assert "patches" not in extra_options
    return n, context * 1.2, value * 0.8


def timestep_embed_handler(layer, x, emb, context, options, output_shape, *video):
    out = layer(x, emb)
    return out * 1.3 if options["block"][0] == "output" else out


def middle_after(state):
    assert {"x", "emb", "context", "timesteps", "transformer_options"} <= set(state)
    return {**state, "h": state["h"] * 1.3}


def output_without_skip(h, skip, options):
    return torch.cat([h, 0.7 * skip], dim=1), None


EXTRA = torch.randn(1, 5, 128, generator=torch.Generator().manual_seed(11))
WRITTEN_PATCHES = {
    "emb_patch": with_patch("set_model_emb_patch", lambda emb, channels, options: emb * (channels / 24)),
    "input_block_patch": with_patch("set_model_input_block_patch", scaled_in(("input", 2), 1.3)),
    "input_block_patch_after_skip": with_patch("set_model_input_block_patch_after_skip", scaled_in(("input", 4), 0.6)),
    "output_block_patch": with_patch("set_model_output_block_patch", lambda h, skip, options: (h, skip * 0.7)),
    "attn1_patch": with_patch("set_model_attn1_patch", checked_attn1_patch),
    "attn1_output_patch": with_patch("set_model_attn1_output_patch", lambda n, extra: n * 1.5),
    "middle_patch": with_patch("set_model_patch", lambda x, extra: x * 1.2, "middle_patch"),
    "attn2_patch": with_patch("set_model_attn2_patch", lambda n, context, value, extra: (n, context, value * 1.4)),
    "attn2_output_patch": with_patch("set_model_attn2_output_patch", lambda n, extra: n * 0.6),
    "attn2_replace like IPAdapter's": lambda model: ip_adapter_patched(model),
    "attn1_replace by (block, number)": with_patch("set_model_attn1_replace",
                                                   lambda q, k, v, extra: v, "output", 4),
}


def ip_adapter_patched(model):
    patched = model.clone()
    for block, number in (("input", 1), ("input", 4), ("middle", 0), ("output", 5)):
        patched.set_model_attn2_replace(ip_adapter_like(EXTRA), block, number, 0)
    return patched


@pytest.mark.parametrize("name", list(WRITTEN_PATCHES))
def test_patches_at_every_point_give_comfyuis_result(name, pair, conditioning):
    assert_same_result(WRITTEN_PATCHES[name], pair, conditioning)


class Motion(torch.nn.Module):
    """A layer a patch pack adds to a block (as AnimateDiff adds its motion modules): nothing by itself."""

    def forward(self, x):
        return x


def motion_handler(layer, x, emb, context, options, output_shape, *video):
    return x + x.roll(1, dims=-1) * emb.mean(dim=1).sign()[:, None, None, None]


def test_a_layer_added_to_a_block_runs_through_forward_timestep_embed_patch(pair, conditioning):
    """AnimateDiff's way: a layer appended to a block, run by a forward_timestep_embed_patch for its class."""
    for model in pair:
        model.model.diffusion_model.output_blocks[4].append(Motion())
    try:
        assert_same_result(with_patch("set_model_forward_timestep_embed_patch", (Motion, motion_handler)), pair,
                           conditioning)
    finally:
        for model in pair:
            del model.model.diffusion_model.output_blocks[4][-1]


def test_a_forward_timestep_embed_patch_for_comfyuis_resblocks_does_what_it_does_there(pair, conditioning):
    """ComfyUI 0.33 offers its own layers to the patch too (ours play their part); 0.3.75 offers them none."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock

    from diffusion_blocks.nodes.unet_protocol import host_offers_every_layer

    patch = with_patch("set_model_forward_timestep_embed_patch", (ResBlock, timestep_embed_handler))
    if host_offers_every_layer():
        assert_same_result(patch, pair, conditioning)
    else:
        assert relative_l2(sample(patch(pair[0]), *conditioning), sample(pair[1], *conditioning)) <= TOLERANCE


def test_the_attention_override_gives_comfyuis_result(pair, conditioning):
    if not comfy_has("comfy.ldm.modules.attention", "optimized_attention_override"):
        pytest.skip("this ComfyUI has no optimized_attention_override")

    def override(func, q, k, v, heads, **kwargs):
        return func(q * 1.6, k, v, heads, **kwargs)

    def patch(model):
        patched = model.clone()
        patched.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = override
        return patched

    assert_same_result(patch, pair, conditioning)


@pytest.mark.parametrize("name", ["middle_block_after_patch", "output_block_patch without a skip"])
def test_points_of_newer_comfyui_give_its_result(name, pair, conditioning):
    """ComfyUI 0.33's middle_block_after_patch and an output_block_patch that joins the skip itself."""
    unet = "comfy.ldm.modules.diffusionmodules.openaimodel"
    if not comfy_has(unet, "middle_block_after_patch"):
        pytest.skip("this ComfyUI's U-Net has neither (0.33.0 has both)")
    patch = (with_patch("set_model_patch", middle_after, "middle_block_after_patch") if name.startswith("middle")
             else with_patch("set_model_output_block_patch", output_without_skip))
    assert_same_result(patch, pair, conditioning)


# ---- control residuals: ControlNet, T2I-Adapter ---------------------------------------------------------------

CONTROLS = {"ControlNet": (small_controlnet, "sd1"), "T2I-Adapter": (small_t2i_adapter, "sd1"),
            "SDXL ControlNet": (small_controlnet, "sdxl"), "SDXL control-LoRA": (small_control_lora, "sdxl")}


@pytest.mark.parametrize("kind", list(CONTROLS))
def test_control_residuals_give_comfyuis_result(kind, request, comfy):
    import nodes

    make, layout = CONTROLS[kind]
    config, pair = (SD1_LIKE, request.getfixturevalue("pair")) if layout == "sd1" else (
        SDXL_LIKE, request.getfixturevalue("sdxl_pair"))
    conditioning = prompts(config)
    hint = torch.rand(1, 128, 128, 3, generator=torch.Generator().manual_seed(8))
    positive, negative = nodes.ControlNetApplyAdvanced().apply_controlnet(
        *conditioning, make(config), hint, strength=0.9, start_percent=0.0, end_percent=0.7)
    ours, theirs = pair
    expected = sample(theirs, positive, negative)
    assert relative_l2(sample(ours, positive, negative), expected) <= TOLERANCE
    assert relative_l2(sample(theirs, *conditioning), expected) > CHANGED


def test_the_sdxl_layout_takes_patch_nodes_as_comfyuis(sdxl_pair):
    assert_same_result(CORE_PATCHES["FreeU_V2"][0], sdxl_pair, prompts(SDXL_LIKE))
    assert_same_result(CORE_PATCHES["PerturbedAttentionGuidance"][0], sdxl_pair, prompts(SDXL_LIKE))


def test_a_compiled_unet_keeps_every_patch(pair, conditioning):
    """Load U-Net's compiled speed (here torch.compile's eager backend) gives the plain network's result under a LoRA
    (run compiled), a ControlNet and call-time patches (run on the plain path)."""
    import comfy.sd
    import nodes

    from diffusion_blocks.networks.unet.fast import FastUNet
    from diffusion_blocks.nodes.unet_nodes import unet_wire

    fast = unet_wire(FastUNet(random_network(), compiled=True, backend="eager")).clone()
    lora = lora_file(pair[1], torch.Generator().manual_seed(3))
    with_control = nodes.ControlNetApplyAdvanced().apply_controlnet(
        *conditioning, small_controlnet(), torch.rand(1, 128, 128, 3, generator=torch.Generator().manual_seed(8)),
        strength=0.9, start_percent=0.0, end_percent=1.0)
    patches = {"LoRA": (lambda m: comfy.sd.load_lora_for_models(m, None, lora, 0.8, 0.0)[0], conditioning),
               "FreeU": (CORE_PATCHES["FreeU"][0], conditioning), "ControlNet": (lambda m: m, with_control),
               "attn2_replace": (WRITTEN_PATCHES["attn2_replace like IPAdapter's"], conditioning)}
    for name, (patch, prompt) in patches.items():
        assert relative_l2(sample(patch(fast), *prompt), sample(patch(pair[0]), *prompt)) <= 1e-5, name


# ---- never silent, never leaking ------------------------------------------------------------------------------

def test_patches_the_unet_cannot_honour_are_refused_by_name(pair, conditioning):
    from comfy.ldm.modules.attention import SpatialTransformer

    from diffusion_blocks.nodes.unet_protocol import host_offers_every_layer

    patched = pair[0].clone()
    patched.set_model_patch_replace(lambda *a: a, "dit", "double_block", 0)
    with pytest.raises(ValueError, match="'dit'"):
        sample(patched, *conditioning)
    patched = pair[0].clone()
    patched.set_model_patch(lambda *a: a, "double_block_patch")
    with pytest.raises(ValueError, match="double_block_patch"):
        sample(patched, *conditioning)
    if host_offers_every_layer():  # 0.3.75 never offers its own spatial transformers to the patch: nor do we there
        patched = pair[0].clone()
        patched.set_model_forward_timestep_embed_patch((SpatialTransformer, timestep_embed_handler))
        with pytest.raises(ValueError, match="SpatialTransformer"):
            sample(patched, *conditioning)


def test_a_control_residual_that_does_not_fit_is_refused_by_block(pair):
    from diffusion_blocks.nodes.unet_protocol import network_control

    network = pair[0].model.denoiser.network
    x, t, context = torch.zeros(1, 4, 16, 16), torch.tensor([500.0]), torch.zeros(1, 3, SD1_LIKE.context_dim)
    with pytest.raises(ValueError, match="middle block"):
        network(x, t, context, control=network_control({"middle": [torch.zeros(1, 3, 2, 2)]}))
    with pytest.raises(ValueError, match="'label'"):
        network_control({"label": [torch.zeros(1)]})


def test_the_pack_sampling_refuses_a_wire_with_call_time_patches(pair):
    from diffusion_blocks.nodes.wires import ready

    patched = CORE_PATCHES["FreeU"][0](pair[0])
    with pytest.raises(ValueError, match="KSampler"):
        ready(patched)


def test_a_lora_on_the_model_is_gone_for_the_next_run_on_the_unet_wire(comfy, conditioning):
    """The DB_UNET and MODEL wires share one network: a LoRA'd (or object-patched) run on the MODEL, then the DB_UNET
    wire without it, gives the DB_UNET wire's own result bit for bit; also after ComfyUI unloads and reloads."""
    import comfy.model_management
    import comfy.sd

    from diffusion_blocks.nodes.native_model import as_native_model
    from diffusion_blocks.nodes.unet_nodes import unet_wire
    from diffusion_blocks.nodes.wires import ready

    unet = unet_wire(random_network(seed=2))
    x, sigma = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(4)), 3.0

    def predict():
        denoiser, _ = ready(unet)
        with torch.no_grad():
            return denoiser(x, sigma, conditioning[0][0][0])

    alone = predict()
    lora = lora_file(unet, torch.Generator().manual_seed(9))
    lora_model, _ = comfy.sd.load_lora_for_models(as_native_model(unet), None, lora, 1.0, 0.0)
    changed = sample(lora_model, *conditioning)
    assert torch.equal(predict(), alone)
    assert relative_l2(sample(lora_model, *conditioning), changed) == 0.0  # the LoRA is back for its own run
    comfy.model_management.unload_all_models()
    assert torch.equal(predict(), alone)
    object_patched = as_native_model(unet)
    object_patched.add_object_patch("diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_v",
                                    torch.nn.Linear(SD1_LIKE.context_dim, 4 * SD1_LIKE.model_channels, bias=False))
    assert relative_l2(sample(object_patched, *conditioning), sample(as_native_model(unet), *conditioning)) > CHANGED
    assert torch.equal(predict(), alone)
