"""A Stable Diffusion 1.x checkpoint with the exact SD1.x architecture and random weights, for tests.

No model hub is reachable from CI, so the tests make their own SD1.x checkpoint: the U-Net of
`v1-inference.yaml` (320/640/1280 channels, 8 heads, cross-attention on 768-wide text), the CLIP
ViT-L/14 text transformer and the KL-f8 VAE, in the single-file layout that ComfyUI's
CheckpointLoaderSimple reads (`model.diffusion_model.*`, `cond_stage_model.transformer.text_model.*`,
`first_stage_model.*`), with deterministic random weights stored as float16 safetensors.

The key names and shapes come from the model classes themselves, built on the `meta` device (no
memory): ComfyUI's U-Net and VAE classes, which use the original LDM key layout, and transformers'
CLIPTextModel for the text encoder. Each tensor is then drawn on its own (seeded by its key, so a
value never depends on the order) with PyTorch's default initialisation and streamed to disk, so
generating the 1.07 B parameters never holds more than one tensor in memory.

The file is generated once into `.cache/test-models/` (the version is in the file name: change
VERSION whenever the recipe changes) and reused by every later run; generation runs in a
subprocess so the caller never imports ComfyUI or transformers (the unit tier stays clean).

    path = sd1_checkpoint_path()               # generates on first use (~1 min, ~2.1 GB)
    name = install_checkpoint(server.base)     # symlink into <base>/models/checkpoints/
"""
import contextlib
import fcntl
import json
import math
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

from .paths import CACHE

VERSION = "v1"
SEED = 1_000_003
CACHE_DIR = CACHE / "test-models"
FILENAME = f"sd15-random-{VERSION}.safetensors"
STALE_PATTERN = "sd15-random-*.safetensors"

UNET_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "cond_stage_model.transformer."
VAE_PREFIX = "first_stage_model."

# v1-inference.yaml's unet_config, spelled as ComfyUI's UNetModel takes it: attention at the
# first three of the four levels (attention_resolutions 4, 2, 1), one transformer block each.
SD15_UNET = dict(
    image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=2,
    channel_mult=(1, 2, 4, 4), num_heads=8, num_head_channels=-1, use_spatial_transformer=True,
    context_dim=768, legacy=False, use_linear_in_transformer=False, adm_in_channels=None,
    transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_middle=1,
    transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
)
# v1-inference.yaml's first_stage_config (AutoencoderKL, embed_dim 4).
SD15_VAE = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128,
                ch_mult=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0)
# openai/clip-vit-large-patch14's text tower.
CLIP_L_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, projection_dim=768,
                   num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                   hidden_act="quick_gelu", layer_norm_eps=1e-5)

# Published parameter counts of SD1.5's parts (diffusers UNet2DConditionModel / AutoencoderKL,
# transformers CLIPTextModel): an independent check that the architecture is the real one.
PARAMETERS = {UNET_PREFIX: 859_520_964, CLIP_PREFIX: 123_060_480, VAE_PREFIX: 83_653_863}


def sd1_checkpoint_path():
    """The cached checkpoint's path; generated (in a subprocess, under a file lock) when missing."""
    return cached_test_file(FILENAME, STALE_PATTERN, "diffusion_blocks.devtools.sd_checkpoint", "~2.1 GB")


def cached_test_file(filename, stale_pattern, module, size, *arguments):
    """CACHE_DIR/filename, made when missing by `python -m module *arguments path` in a subprocess under a file
    lock; other versions (stale_pattern) are removed then."""
    path = CACHE_DIR / filename
    if path.exists():
        return path
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with _locked(CACHE_DIR / f".{filename}.lock"):
        if not path.exists():
            started = time.monotonic()
            print(f"[{module}] generating {path} (once; {size})", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, "-m", module, *arguments, str(path)], cwd=CACHE_DIR, check=True)
            print(f"[{module}] generated in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
            for stale in CACHE_DIR.glob(stale_pattern):
                if stale != path:
                    stale.unlink()
    return path


def install_checkpoint(base_directory, name=FILENAME):
    """Symlink the checkpoint into `<base>/models/checkpoints/`; returns the name ComfyUI lists it under."""
    return install_model_file(sd1_checkpoint_path(), base_directory, "checkpoints", name)


def install_model_file(target, base_directory, folder_name, name):
    """Symlink `target` into `<base>/models/<folder_name>/<name>`; returns `name`.

    ComfyUI lists symlinked files, and its filename cache is keyed on the folder's mtime, which
    the new link changes, so a running server finds a file linked after its start-up.
    """
    folder = Path(base_directory) / "models" / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / name
    if link.is_symlink() and link.resolve() == target.resolve():
        return name
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)
    return name


@contextlib.contextmanager
def _locked(lock_path):
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---- generation (runs in the subprocess) -------------------------------------------------------

def architecture():
    """(prefix, module) for the three parts, built on the meta device: key names and shapes only."""
    import torch

    from .comfy_host import import_comfyui

    import_comfyui()
    import transformers
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    with torch.device("meta"):
        unet = UNetModel(**SD15_UNET)
        vae = AutoencoderKL(ddconfig=dict(SD15_VAE), embed_dim=4)
        clip = transformers.CLIPTextModel(transformers.CLIPTextConfig(**CLIP_L_TEXT))
    text_model = getattr(clip, "text_model", clip)  # transformers 5 dropped the `text_model.` level
    return [(UNET_PREFIX, unet), (CLIP_PREFIX + "text_model.", text_model), (VAE_PREFIX, vae)]


def tensor_plan(parts=None):
    """[(key, shape, dtype, make)] in file order for (prefix, module) parts (default: the checkpoint's three);
    make(generator) draws the tensor's values."""
    import torch

    plan = []
    for prefix, model in parts if parts is not None else architecture():
        for module_name, module in model.named_modules():
            for param_name, param in module.named_parameters(recurse=False):
                key = prefix + (f"{module_name}.{param_name}" if module_name else param_name)
                plan.append((key, tuple(param.shape), torch.float16, _initialiser(module, param_name, param)))
        if prefix.startswith(CLIP_PREFIX):  # the original checkpoints carry CLIP's position ids too
            ids = model.embeddings.position_ids
            plan.append((prefix + "embeddings.position_ids", tuple(ids.shape), torch.int64,
                         lambda generator, n=ids.shape[-1]: torch.arange(n, dtype=torch.int64)[None]))
    return plan


def _initialiser(module, param_name, param):
    """PyTorch's default initialisation of the module the parameter belongs to."""
    import torch

    shape = tuple(param.shape)
    if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
        fill = 1.0 if param_name == "weight" else 0.0
        return lambda generator: torch.full(shape, fill)
    if isinstance(module, torch.nn.Embedding):
        return lambda generator: torch.randn(shape, generator=generator)
    if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and param_name in ("weight", "bias"):
        # kaiming_uniform(a=sqrt(5)) for the weight and U(+-1/sqrt(fan_in)) for the bias: both U(+-1/sqrt(fan_in)).
        weight = module.weight
        bound = 1.0 / math.sqrt(weight.shape[1] * math.prod(weight.shape[2:]))
        return lambda generator: torch.rand(shape, generator=generator).mul_(2 * bound).sub_(bound)
    raise TypeError(f"no initialisation for {type(module).__name__}.{param_name} {shape}")


def write_checkpoint(path, plan=None, name=f"sd15-random-{VERSION}"):
    """Stream the tensors into a safetensors file, one at a time; written to a temporary name, then renamed."""
    import torch

    plan = plan if plan is not None else tensor_plan()
    names = {torch.float16: "F16", torch.int64: "I64"}
    header, offset = {}, 0
    for key, shape, dtype, _ in plan:
        size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[key] = {"dtype": names[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt", "diffusion_blocks.test_checkpoint": name,
                              "diffusion_blocks.note": "random weights, SD1.x architecture, for tests only"}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)

    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.part")
    generator = torch.Generator()
    try:
        with open(temporary, "wb") as out:
            out.write(struct.pack("<Q", len(encoded)))
            out.write(encoded)
            for key, shape, dtype, make in plan:
                generator.manual_seed(SEED ^ zlib.crc32(key.encode()))
                out.write(make(generator).to(dtype).contiguous().numpy().tobytes())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


if __name__ == "__main__":
    write_checkpoint(sys.argv[1])
