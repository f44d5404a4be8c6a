"""Text encoder nodes: load CLIP text encoders, encode prompts into native CONDITIONING, show a prompt's tokens."""
import logging

import comfy.model_management
import comfy.model_patcher
import folder_paths
import torch
from comfy_api.latest import io

from ..networks.clip_tokenizer import default_tokenizer
from ..networks.families import TEXT_CONDITIONINGS
from ..networks.prompt_syntax import EmbeddingLibrary, tokenize_prompt
from ..networks.text_encoder_loading import load_text_encoder
from ..networks.weights import DTYPES
from ..pipeline.finite import check_text_encoding
from ..views.tokens import draw_tokens
from .checks import CheckedNode
from .compat import schema
from .images import to_image_tensor
from .model_files import PACK_FOLDER, model_file_options, resolve_model_file
from .wires import LoadedTextEncoder

CATEGORY = "diffusion_blocks/text"
TextEncoderType = io.Custom("DB_TEXT_ENCODER")
FOLDERS = (PACK_FOLDER, "text_encoders", "checkpoints")
MAX_RESOLUTION = 16384
LAYER_TOOLTIP = ("Which layer's output conditions the image ('clip skip'): 0 uses the model family's own (SD1: -1, "
                 "SD2 and SDXL: -2); -1 is the last layer, -2 the one before, and so on.")
log = logging.getLogger(__name__)


def embeddings():
    """ComfyUI's embeddings folders, where `embedding:name` looks."""
    return EmbeddingLibrary(folder_paths.get_folder_paths("embeddings"))


def conditioning(cond, pooled, **extra):
    """Native CONDITIONING: [[cond (1, T, D), {"pooled_output": (1, P), ...}]] on ComfyUI's intermediate device."""
    device = comfy.model_management.intermediate_device()
    return [[cond.to(device), {"pooled_output": pooled.to(device), **extra}]]


def encode(loaded, text, stop_at_clip_layer):
    """(cond, pooled) of a prompt, with its problems logged as warnings."""
    encoder = loaded.ready()
    tokens = encoder.tokenize(text, embeddings())
    for problem in next(iter(tokens.values())).problems:
        log.warning("Diffusion Blocks prompt: %s", problem)
    cond, pooled = encoder.encode_tokens(tokens, layer=stop_at_clip_layer or None)
    check_text_encoding(encoder, loaded.name, cond, pooled)
    return cond, pooled


class LoadTextEncoder(CheckedNode):
    @classmethod
    def define_schema(cls):
        options = model_file_options(FOLDERS)
        return schema(
            node_id="DB_LoadTextEncoder", display_name="Load Text Encoder", category=CATEGORY,
            search_aliases=['clip loader', 'load clip', 'text encoder'],
            description="Load the CLIP text encoder(s) of SD1.x, SD2.x, SDXL or the pack's bundled model from a checkpoint or from standalone text "
                        "encoder files (any key naming); the family is read from the weights' shapes.",
            inputs=[
                io.Combo.Input("file", options=options, tooltip="A checkpoint (its text encoder is used) or a text encoder "
                                                                 "file from models/text_encoders or models/clip; "
                                                                 "diffusion_blocks/: the pack's bundled model."),
                io.Combo.Input("second_file", options=["none", *options], default="none",
                               tooltip="For SDXL from standalone files: the other tower (clip_l with clip_g). 'none' otherwise."),
                io.Combo.Input("family", options=["auto", *TEXT_CONDITIONINGS], default="auto",
                               tooltip="auto: detected from the weights. " + "; ".join(f"{k}: {f.description}" for k, f in TEXT_CONDITIONINGS.items())),
                io.Combo.Input("dtype", options=["auto", *DTYPES], default="auto",
                               tooltip="Precision of the weights: auto is float32 on the CPU and ComfyUI's text encoder "
                                       "precision (usually float16) on a GPU."),
            ],
            outputs=[TextEncoderType.Output(display_name="text_encoder", tooltip="The text encoder, for Encode Text.")])

    @classmethod
    def execute(cls, file, second_file, family, dtype) -> io.NodeOutput:
        mm = comfy.model_management
        paths = [resolve_model_file(file, FOLDERS, "file")]
        if second_file != "none":
            paths.append(resolve_model_file(second_file, FOLDERS, "second_file"))
        device, offload = mm.text_encoder_device(), mm.text_encoder_offload_device()
        chosen = DTYPES.get(dtype) or (torch.float32 if mm.is_device_cpu(device) else mm.text_encoder_dtype(device))
        encoder = load_text_encoder(paths, family=family, dtype=chosen, device=offload)
        patcher = comfy.model_patcher.ModelPatcher(encoder, load_device=device, offload_device=offload)
        return io.NodeOutput(LoadedTextEncoder(encoder, patcher, " + ".join(p.split("/")[-1] for p in paths)))


class EncodeText(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_EncodeText", display_name="Encode Text", category=CATEGORY,
            search_aliases=['clip text encode', 'prompt', 'conditioning'],
            description="Turn a prompt into CONDITIONING for any sampler: (words:1.3) weights, \\( \\) escapes, "
                        "embedding:name, and prompts longer than 75 tokens in windows, exactly as ComfyUI reads them.",
            inputs=[
                TextEncoderType.Input("text_encoder", tooltip="From Load Text Encoder."),
                io.String.Input("text", multiline=True, dynamic_prompts=True, tooltip="The prompt."),
                io.Int.Input("stop_at_clip_layer", default=0, min=-48, max=0, tooltip=LAYER_TOOLTIP),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning", tooltip="Native CONDITIONING: works with "
                                            "ComfyUI's KSampler and every node that takes CONDITIONING.")])

    @classmethod
    def execute(cls, text_encoder, text, stop_at_clip_layer) -> io.NodeOutput:
        cond, pooled = encode(text_encoder, text, stop_at_clip_layer)
        return io.NodeOutput(conditioning(cond, pooled))


class EncodeTextSDXL(CheckedNode):
    @classmethod
    def define_schema(cls):
        size = dict(min=0, max=MAX_RESOLUTION, step=8)
        return schema(
            node_id="DB_EncodeTextSDXL", display_name="Encode Text (SDXL)", category=CATEGORY,
            search_aliases=['clip text encode sdxl', 'prompt', 'conditioning'],
            description="SDXL's conditioning: CLIP-L and bigG penultimate layers side by side, bigG's pooled output, and "
                        "the image size, crop and target size SDXL was trained to be told (Podell et al. 2023).",
            inputs=[
                TextEncoderType.Input("text_encoder", tooltip="An SDXL text encoder from Load Text Encoder."),
                io.String.Input("text", multiline=True, dynamic_prompts=True, tooltip="The prompt."),
                io.Int.Input("width", default=1024, tooltip="Original image width SDXL is told (as if the training image "
                                                            "was this wide; small values look low-resolution).", **size),
                io.Int.Input("height", default=1024, tooltip="Original image height SDXL is told.", **size),
                io.Int.Input("crop_w", default=0, tooltip="Left edge of the crop SDXL is told (0: uncropped, centred subjects).", **size),
                io.Int.Input("crop_h", default=0, tooltip="Top edge of the crop SDXL is told (0: uncropped).", **size),
                io.Int.Input("target_width", default=1024, tooltip="Width of the image being made.", **size),
                io.Int.Input("target_height", default=1024, tooltip="Height of the image being made.", **size),
                io.Int.Input("stop_at_clip_layer", default=0, min=-48, max=0, tooltip=LAYER_TOOLTIP),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning", tooltip="Native SDXL CONDITIONING.")])

    @classmethod
    def execute(cls, text_encoder, text, width, height, crop_w, crop_h, target_width, target_height, stop_at_clip_layer) -> io.NodeOutput:
        family = text_encoder.encoder.family.name
        if family not in ("sdxl", "sdxl_refiner"):
            raise ValueError(f"text_encoder: {text_encoder.name} is a {family} text encoder; this node needs SDXL's")
        cond, pooled = encode(text_encoder, text, stop_at_clip_layer)
        sizes = dict(width=width, height=height, crop_w=crop_w, crop_h=crop_h, target_width=target_width, target_height=target_height)
        return io.NodeOutput(conditioning(cond, pooled, **sizes))


class ShowTokens(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_ShowTokens", display_name="Show Tokens", category="diffusion_blocks/views",
            search_aliases=['tokenizer', 'tokens', 'prompt weights'],
            description="Draw a prompt as CLIP reads it: its tokens, each token's weight, the 75-token windows and the "
                        "spans moved or cut at their edges, embeddings, and any syntax problems.",
            inputs=[
                io.String.Input("text", multiline=True, dynamic_prompts=True, tooltip="The prompt."),
                io.Int.Input("width", default=1024, min=256, max=4096, step=8, tooltip="Image width in pixels (the height follows the prompt)."),
                TextEncoderType.Input("text_encoder", optional=True,
                                      tooltip="Optional: its embedding widths are used for embedding:name (CLIP-L's otherwise)."),
            ],
            outputs=[io.Image.Output(display_name="tokens", tooltip="The tokens as an image.")])

    @classmethod
    def execute(cls, text, width, text_encoder=None) -> io.NodeOutput:

        encoder = text_encoder.encoder if text_encoder is not None else None
        use = (encoder.family if encoder is not None else TEXT_CONDITIONINGS["sd1"]).towers[0]
        tokenizer = encoder.tokenizer if encoder is not None else default_tokenizer()
        tower_width = encoder.towers[use.name].config.width if encoder is not None else 768
        prompt = tokenize_prompt(text, tokenizer, use.pad, embeddings(), use.embedding_key, tower_width)
        picture = draw_tokens(prompt.windows, tokenizer.token_text, prompt.spans, prompt.problems, width=width)
        return io.NodeOutput(to_image_tensor(picture))


TEXT_NODES = [LoadTextEncoder, EncodeText, EncodeTextSDXL, ShowTokens]
