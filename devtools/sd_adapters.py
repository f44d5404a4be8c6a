"""A ControlNet and a LoRA for SD1.5's U-Net with random weights, for tests and docs (no model hub is reachable).

The ControlNet is ComfyUI's own ControlNet network for SD1.5 (v1-inference.yaml's U-Net encoder, a hint encoder of
3-channel pictures, zero convolutions) in the original single-file layout (`control_model.*`), as ControlNetLoader
reads the published `control_v11*_sd15_*` files; its zero convolutions are drawn like every other layer, so it steers.
The LoRA is kohya's format (`lora_unet_<LDM name>.lora_down / lora_up / alpha`) on every attention projection of the
U-Net. Both are drawn like the test checkpoint (devtools/sd_checkpoint.py: PyTorch's default initialisation, seeded
by key, fp16 safetensors), made once into `.cache/test-models/` and reused.

    install_controlnet(server.base, "control_v11p_sd15_canny_fp16.safetensors")
    install_lora(server.base, "my_sd15_lora.safetensors")
"""
import sys

from .sd_checkpoint import SD15_UNET, VERSION, cached_test_file, install_model_file, tensor_plan, write_checkpoint

CONTROLNET_FILE = f"sd15-controlnet-random-{VERSION}.safetensors"
LORA_FILE = f"sd15-lora-random-{VERSION}.safetensors"
CONTROL_PREFIX = "control_model."
LORA_RANK = 8
ATTENTION_PROJECTIONS = (".to_q", ".to_k", ".to_v", ".to_out.0")


def controlnet_path():
    return cached_test_file(CONTROLNET_FILE, "sd15-controlnet-random-*.safetensors", __name__, "~0.7 GB",
                            "controlnet")


def lora_path():
    return cached_test_file(LORA_FILE, "sd15-lora-random-*.safetensors", __name__, "~6 MB", "lora")


def install_controlnet(base_directory, name=CONTROLNET_FILE):
    """Symlink the ControlNet into `<base>/models/controlnet/`; returns the name ComfyUI lists it under."""
    return install_model_file(controlnet_path(), base_directory, "controlnet", name)


def install_lora(base_directory, name=LORA_FILE):
    """Symlink the LoRA into `<base>/models/loras/`; returns the name ComfyUI lists it under."""
    return install_model_file(lora_path(), base_directory, "loras", name)


def write_hint_picture(path, size=64):
    """A picture with clear edges for a ControlNet's preprocessor (Canny): a ring and a square on black."""
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(picture)
    draw.ellipse((size // 10, size // 10, size // 2, size // 2), outline=(255, 255, 255), width=max(1, size // 20))
    draw.rectangle((size // 2 + 4, size // 2, size - size // 10, size - size // 10), fill=(200, 200, 200))
    picture.save(path)
    return path


# ---- generation (runs in the subprocess) -------------------------------------------------------

def controlnet_plan():
    import torch

    from .comfy_host import import_comfyui

    import_comfyui()
    from comfy.cldm.cldm import ControlNet

    config = {k: v for k, v in SD15_UNET.items() if k not in ("out_channels", "transformer_depth_output")}
    with torch.device("meta"):
        network = ControlNet(hint_channels=3, **config)
    return tensor_plan([(CONTROL_PREFIX, network)])


def lora_plan():
    """LoRA down / up pairs (with alpha) for every attention projection, shaped as nn.Linear(in, r), (r, out)."""
    import torch

    from .comfy_host import import_comfyui

    import_comfyui()
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    with torch.device("meta"):
        unet = UNetModel(**SD15_UNET)
    parts = []
    for name, module in unet.named_modules():
        if name.endswith(ATTENTION_PROJECTIONS):
            key = "lora_unet_" + name.replace(".", "_")
            pair = torch.nn.Module()
            pair.lora_down = torch.nn.Linear(module.in_features, LORA_RANK, bias=False, device="meta")
            pair.lora_up = torch.nn.Linear(LORA_RANK, module.out_features, bias=False, device="meta")
            parts.append((f"{key}.", pair))
    plan = tensor_plan(parts)
    alphas = [(f"{prefix}alpha", (), torch.float16, lambda generator: torch.tensor(float(LORA_RANK)))
              for prefix, _ in parts]
    return plan + alphas


if __name__ == "__main__":
    kind, path = sys.argv[1:]
    plans = {"controlnet": (controlnet_plan, CONTROLNET_FILE), "lora": (lora_plan, LORA_FILE)}
    plan, name = plans[kind]
    write_checkpoint(path, plan(), name=name.removesuffix(".safetensors"))
