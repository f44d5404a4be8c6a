"""Load LoRA (pack): a LoRA file on the pack's U-Net and text encoder wires, read by ComfyUI's own LoRA machinery.

The U-Net wire is ComfyUI's model under the LDM names, so ComfyUI's key map for it applies as it is. The text
encoder's key map is ComfyUI's for the CLIP of its family (native_clip), its targets turned into the pack's tensors
(q, k and v as offsets into the fused projection). Both go into one key map, as ComfyUI's LoraLoader builds it, so
ComfyUI's loader reads the file and logs what fits neither ("lora key not loaded"); a LoRA of which nothing fits is
an error naming the file. The patches are applied when ComfyUI loads each wire's network, as for its own models.
"""
import comfy.lora
import comfy.lora_convert
import comfy.utils
import folder_paths
from comfy_api.latest import io

from .checks import CheckedNode
from .compat import schema
from .native_clip import comfy_text_model, pack_targets
from .text_nodes import TextEncoderType
from .unet_nodes import CATEGORY
from .wires import UNET, LoadedTextEncoder

STRENGTH = dict(default=1.0, min=-100.0, max=100.0, step=0.01)


def lora_patches(unet, text_encoder, lora):
    """(U-Net patches, text encoder patches under the pack's names) of a LoRA state dict, by ComfyUI's key maps."""
    key_map = comfy.lora.model_lora_keys_unet(unet.model, {})
    targets = {}
    if text_encoder is not None:
        model = comfy_text_model(text_encoder.encoder)
        key_map = comfy.lora.model_lora_keys_clip(model, key_map)
        targets = pack_targets(text_encoder.encoder, model.state_dict())
    loaded = comfy.lora.load_lora(comfy.lora_convert.convert_lora(lora), key_map)
    return ({key: patch for key, patch in loaded.items() if key not in targets},
            {targets[key]: patch for key, patch in loaded.items() if key in targets})


def with_lora(unet, text_encoder, lora, name, strength_unet, strength_text_encoder):
    """(unet, text_encoder) wires with the LoRA's patches at these strengths; a clear error when nothing fits."""
    unet_patches, encoder_patches = lora_patches(unet, text_encoder, lora)
    if not unet_patches and not encoder_patches:
        what = ("this U-Net or text encoder" if text_encoder is not None
                else "this U-Net (nor a text encoder: none is connected)")
        raise ValueError(f"lora_name: none of the {len(lora)} tensors of {name} fit {what}; a LoRA for another "
                         f"model family?")
    if strength_unet != 0 and unet_patches:
        unet = unet.clone()
        unet.add_patches(unet_patches, strength_unet)
    if text_encoder is not None and strength_text_encoder != 0 and encoder_patches:
        patcher = text_encoder.patcher.clone()
        patcher.add_patches(encoder_patches, strength_text_encoder)
        text_encoder = LoadedTextEncoder(text_encoder.encoder, patcher, f"{text_encoder.name} + {name}")
    return unet, text_encoder


class LoadLoRA(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_LoraLoader", display_name="Load LoRA (pack)", category=CATEGORY,
            search_aliases=['lora', 'lora loader', 'lycoris'],
            description="A LoRA file (kohya, diffusers, LyCORIS, ... as ComfyUI's LoraLoader reads them) on the pack's "
                        "U-Net and text encoder: the same result as LoraLoader on ComfyUI's own model and CLIP of "
                        "the same weights.",
            inputs=[
                UNET.Input("unet", tooltip="The noise predictor (from Load U-Net)."),
                io.Combo.Input("lora_name", options=folder_paths.get_filename_list("loras"),
                               tooltip="A LoRA file from ComfyUI's models/loras folder."),
                io.Float.Input("strength_unet", tooltip="How strongly the LoRA changes the U-Net (0: not at all, "
                                                        "negative: the other way).", **STRENGTH),
                io.Float.Input("strength_text_encoder", tooltip="How strongly the LoRA changes the text encoder.",
                               **STRENGTH),
                TextEncoderType.Input("text_encoder", optional=True,
                                      tooltip="Optional: the text encoder (from Load Text Encoder) the LoRA's text "
                                              "part applies to."),
            ],
            outputs=[UNET.Output(display_name="unet", tooltip="The U-Net with the LoRA."),
                     TextEncoderType.Output(display_name="text_encoder", tooltip="The text encoder with the LoRA "
                                                                                 "(nothing when none is connected).")])

    @classmethod
    def execute(cls, unet, lora_name, strength_unet, strength_text_encoder, text_encoder=None) -> io.NodeOutput:
        lora = comfy.utils.load_torch_file(folder_paths.get_full_path_or_raise("loras", lora_name), safe_load=True)
        return io.NodeOutput(*with_lora(unet, text_encoder, lora, lora_name, strength_unet, strength_text_encoder))


LORA_NODES = [LoadLoRA]
