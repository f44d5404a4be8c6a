"""The pack's text encoder as ComfyUI's own CLIP: ComfyUI's text model for the family, holding the pack's weights.

Text Encoder as CLIP builds ComfyUI's own CLIP for the encoder's family (SD1ClipModel for SD1.x and the pack's
small model, SD2ClipModel, SDXLClipModel, SDXLRefinerClipModel, each with ComfyUI's tokenizer), sized by the pack's
towers through ComfyUI's `clip_<tower>_model_config` options, built on the meta device and given the pack's own
tensors (assigned, not copied; q, k and v are views of the fused projection). So tokens, weight syntax, clip skip
(CLIPSetLastLayer), pooled outputs, embeddings and LoRA key maps are ComfyUI's, by construction, and every node that
takes a CLIP works on it. A LoRA the pack's LoRA loader put on the encoder travels along as the same patches under
ComfyUI's names. Refused: a family ComfyUI has no CLIP for, and towers ComfyUI's CLIP cannot hold (a vocabulary other
than CLIP's, a projection that is not square).

The same name table (ComfyUI's tensor name -> the pack's tensor, or a part of its fused q, k, v) turns ComfyUI's LoRA
key map for that CLIP into one for the pack's encoder (lora_nodes.py).
"""
import comfy.sd
import comfy.supported_models_base
import folder_paths
import torch
from comfy import sd1_clip, sdxl_clip
from comfy.text_encoders import sd2_clip
from comfy_api.latest import io

from ..networks.text_encoder_loading import hf_source
from .checks import CheckedNode
from .compat import schema
from .text_nodes import CATEGORY, TextEncoderType

# family -> (ComfyUI's text model, its tokenizer, {pack tower: ComfyUI tower}). The small model reads its tower as
# SD1 reads CLIP-L (last layer, final norm, end-token padding, unprojected pooled output), at its own size.
COMFY_CLIPS = {
    "sd1": (sd1_clip.SD1ClipModel, sd1_clip.SD1Tokenizer, {"l": "clip_l"}),
    "small": (sd1_clip.SD1ClipModel, sd1_clip.SD1Tokenizer, {"s": "clip_l"}),
    "sd2": (sd2_clip.SD2ClipModel, sd2_clip.SD2Tokenizer, {"h": "clip_h"}),
    "sdxl": (sdxl_clip.SDXLClipModel, sdxl_clip.SDXLTokenizer, {"l": "clip_l", "g": "clip_g"}),
    "sdxl_refiner": (sdxl_clip.SDXLRefinerClipModel, sdxl_clip.SDXLTokenizer, {"g": "clip_g"}),
}
CLIP_VOCABULARY = 49408  # ComfyUI's CLIP embeddings always hold CLIP's whole vocabulary


def comfy_clip_class(encoder):
    """(text model class, tokenizer class, tower map, model_options sizing each tower) of ComfyUI's CLIP for this
    encoder; a clear error for what ComfyUI's CLIP cannot be."""
    family = encoder.family.name
    if family not in COMFY_CLIPS:
        raise ValueError(f"text_encoder: ComfyUI has no CLIP for the {family} family (it has {', '.join(COMFY_CLIPS)})")
    model_class, tokenizer_class, towers = COMFY_CLIPS[family]
    options = {}
    for ours, theirs in towers.items():
        config = encoder.towers[ours].config
        if config.vocabulary != CLIP_VOCABULARY or config.projection not in (0, config.width):
            raise ValueError(f"text_encoder: its {ours} tower ({config.vocabulary} tokens, projection "
                             f"{config.projection} wide for a {config.width}-wide tower) cannot be held by ComfyUI's "
                             f"CLIP, which needs {CLIP_VOCABULARY} tokens and a square projection")
        options[f"{theirs}_model_config"] = {
            "hidden_size": config.width, "intermediate_size": config.mlp_width, "num_attention_heads": config.heads,
            "num_hidden_layers": config.layers, "hidden_act": config.activation,
            "max_position_embeddings": config.positions, "eos_token_id": config.end_token}
    return model_class, tokenizer_class, towers, options


def comfy_text_model(encoder):
    """ComfyUI's text model for the encoder, on the meta device: its names and shapes only (e.g. for LoRA key maps)."""
    model_class, _, _, options = comfy_clip_class(encoder)
    return model_class(device="meta", dtype=torch.float32, model_options=options)


def pack_targets(encoder, names):
    """ComfyUI tensor name -> the pack's: "towers.<t>.<name>", or (that name, (0, start, length)) for q, k or v in the
    fused projection (ComfyUI's patch offsets); names that are not the towers' own (logit_scale) are left out."""
    towers = comfy_clip_class(encoder)[2]
    targets = {}
    for name in names:
        tower = next((ours for ours, theirs in towers.items() if name.startswith(f"{theirs}.transformer.")), None)
        source = hf_source(name.split(".transformer.", 1)[1], encoder.towers[tower].config.width) if tower else None
        if source is not None:
            pack_name, rows = source
            pack_name = f"towers.{tower}.{pack_name}"
            targets[name] = pack_name if rows is None else (pack_name, (0, *rows))
    return targets


def original_weights(loaded):
    """The encoder's tensors as loaded, without weight patches (ComfyUI keeps the originals while patched), on the
    offload device, and the patches on them: ({name: tensor}, {name: [patch, ...]})."""
    offload = loaded.patcher.offload_device
    weights, patches = {}, {}
    for name, (original, *on_it) in loaded.patcher.get_key_patches().items():
        weights[name] = original[0].detach().to(offload)
        if on_it:
            patches[name] = on_it
    return weights, patches


def shared_tensors(encoder, weights, targets, dtype):
    """ComfyUI name -> the pack's tensor (a view of it for q, k, v); a tower without a projection gets the identity
    (its pooled output is unprojected, as the pack reads it)."""
    shared = {}
    for name, target in targets.items():
        key, rows = (target, None) if isinstance(target, str) else (target[0], target[1][1:])
        tensor = weights.get(key)
        if tensor is None and key.endswith(".projection.weight"):
            width = encoder.towers[key.split(".")[1]].config.width
            tensor = torch.eye(width, dtype=dtype, device=next(iter(weights.values())).device)
        shared[name] = tensor if rows is None else tensor.narrow(0, *rows)
    return shared


def as_comfy_clip(loaded):
    """ComfyUI's CLIP of a DB_TEXT_ENCODER wire: its family's text model and tokenizer holding the encoder's weights
    (shared), with the wire's weight patches (a LoRA) under ComfyUI's names."""
    encoder, patcher = loaded.encoder, loaded.patcher
    model_class, tokenizer_class, _, options = comfy_clip_class(encoder)
    weights, patches = original_weights(loaded)
    dtype = next(iter(weights.values())).dtype
    options = {**options, "dtype": dtype, "load_device": patcher.load_device, "offload_device": patcher.offload_device,
               "initial_device": torch.device("meta")}
    clip = comfy.sd.CLIP(comfy.supported_models_base.ClipTarget(tokenizer_class, model_class), model_options=options,
                         embedding_directory=folder_paths.get_folder_paths("embeddings"))
    targets = pack_targets(encoder, clip.cond_stage_model.state_dict())
    clip.cond_stage_model.load_state_dict(shared_tensors(encoder, weights, targets, dtype), strict=False, assign=True)
    empty = [name for name, tensor in clip.cond_stage_model.state_dict().items() if tensor.is_meta]
    if empty:
        raise ValueError(f"text_encoder: ComfyUI's CLIP has tensors the encoder lacks: {', '.join(empty[:5])}")
    carry_patches(clip, patches, targets)
    return clip


def carry_patches(clip, patches, targets):
    """Put the pack encoder's weight patches on the CLIP under ComfyUI's names; a clear error for any that has none."""
    names = {target: name for name, target in targets.items()}
    for key, entries in patches.items():
        for strength_patch, patch, strength_model, offset, function in entries:
            name = names.get(key if offset is None else (key, tuple(offset)))
            if name is None or function is not None:
                raise ValueError(f"text_encoder: carries a weight patch on {key} that ComfyUI's CLIP has no tensor "
                                 f"for; apply it after Text Encoder as CLIP instead")
            clip.add_patches({name: patch}, strength_patch, strength_model)


class TextEncoderAsCLIP(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_TextEncoderAsCLIP", display_name="Text Encoder as CLIP", category=CATEGORY,
            search_aliases=['clip', 'native clip', 'clip text encode'],
            description="The pack's text encoder as a native CLIP: ComfyUI's own text model of its family holding "
                        "the same weights (shared, not copied), so CLIPTextEncode, CLIPTextEncodeSDXL, "
                        "CLIPSetLastLayer, LoraLoader and every node that takes a CLIP work on it and give ComfyUI's "
                        "result.",
            inputs=[TextEncoderType.Input("text_encoder", tooltip="From Load Text Encoder (or Load LoRA (pack)): "
                                                                  "SD1.x, SD2.x, SDXL, SDXL refiner or the pack's "
                                                                  "small model.")],
            outputs=[io.Clip.Output(display_name="clip", tooltip="A native CLIP with the encoder's weights and any "
                                                                 "LoRA on it: connect to CLIPTextEncode and friends.")])

    @classmethod
    def execute(cls, text_encoder) -> io.NodeOutput:
        return io.NodeOutput(as_comfy_clip(text_encoder))


NATIVE_CLIP_NODES = [TextEncoderAsCLIP]
