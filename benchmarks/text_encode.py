"""Prompts per second of our text encoders against ComfyUI 0.3.75's, full size, identical random weights.

CLIP ViT-L/14 (SD1.x's, last layer) and OpenCLIP ViT-bigG/14 (SDXL's, penultimate layer, projected
pooled output) are built at full size with the same random weights in both implementations. Each
prompt of a fixed set (short, weighted, 3 windows) is encoded one at a time, as a node does: ours
with TextEncoder.encode, ComfyUI's with its tokenizer's tokenize_with_weights and its model's
encode_token_weights. ComfyUI is measured as it runs by default (weights stored in float16 on the
CPU, computed in float32) and with float32 weights; ours computes in its weights' dtype (float32 on the
CPU; float16 and float32 on a GPU when one is present). Outputs are checked to agree before timing; the
implementations take turns pass by pass and the median pass counts, so a busy machine biases no one.
Writes benchmarks/results/text_encode.md. Run: .venv/bin/python benchmarks/text_encode.py [--repeats N]
"""
import argparse
import math
import statistics
import time
from pathlib import Path

import torch

from diffusion_blocks.devtools.comfy_host import import_comfyui
from diffusion_blocks.networks.clip_text import ARCHITECTURES
from diffusion_blocks.networks.text_encoder_loading import load_text_encoder

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PROMPTS = [
    "a photo of a cat",
    "(masterpiece:1.2), best quality, a red fox sitting in the snow at dawn, ((golden light)), detailed fur",
    "portrait of an old fisherman, weathered face, (dramatic lighting:1.3), 85mm, film grain, \\(kodak\\)",
    "a (very detailed:1.2) painting of " + ", ".join(f"(object {i}:{0.7 + 0.05 * (i % 8):.2f})" for i in range(30))
    + ", " + " ".join(["landscape"] * 40),
]


def random_hf_state(architecture, seed=0):
    """Full-size random weights with Hugging Face names, drawn tensor by tensor (no model in memory)."""
    import transformers

    real = ARCHITECTURES[architecture]
    config = transformers.CLIPTextConfig(hidden_size=real.width, intermediate_size=real.mlp_width, projection_dim=real.projection,
                                         num_hidden_layers=real.layers, num_attention_heads=real.heads, hidden_act=real.activation)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in transformers.CLIPTextModelWithProjection(config).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if "layer_norm" in key:
            state[key] = (torch.ones(shape) if key.endswith("weight") else torch.zeros(shape))
        elif "embedding" in key:
            state[key] = torch.randn(shape, generator=generator) * 0.02
        else:
            state[key] = torch.randn(shape, generator=generator) / math.sqrt(shape[-1])
    return {("text_model." + k if not k.startswith(("text_model.", "text_projection")) else k): v for k, v in state.items()}


def comfy_encoder(architecture, state, dtype, device):
    """(tokenizer, model) of ComfyUI for SD1.x's CLIP-L or SDXL's bigG, holding `state`."""
    from comfy import sd1_clip, sdxl_clip

    if architecture == "clip_l":
        tokenizer, model = sd1_clip.SDTokenizer(), sd1_clip.SD1ClipModel(dtype=dtype, device=device)
        key = "l"
    else:
        tokenizer, model = sdxl_clip.SDXLClipGTokenizer(), sdxl_clip.SDXLRefinerClipModel(dtype=dtype, device=device)
        key = "g"
    missing, unexpected = model.load_sd({k: v.to(dtype) for k, v in state.items()})
    assert not missing and not unexpected, (missing, unexpected)
    return lambda text: model.encode_token_weights({key: tokenizer.tokenize_with_weights(text)})[:2]


def pass_seconds(encode, device):
    """Seconds to encode every prompt once."""
    started = time.perf_counter()
    with torch.no_grad():
        for prompt in PROMPTS:
            encode(prompt)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def prompts_per_second(implementations, repeats, device):
    """{name: prompts/s} from the median of `repeats` passes, the implementations taking turns (fair under load)."""
    for encode in implementations.values():
        pass_seconds(encode, device)  # warm-up
    seconds = {name: [] for name in implementations}
    for _ in range(repeats):
        for name, encode in implementations.items():
            seconds[name].append(pass_seconds(encode, device))
    return {name: len(PROMPTS) / statistics.median(times) for name, times in seconds.items()}


def agree(ours, theirs, architecture):
    with torch.no_grad():
        for prompt in PROMPTS:
            a, b = ours(prompt), theirs(prompt)
            for x, y in zip(a, b):
                scale = y.abs().max().item()
                error = (x.float().cpu() - y.float().cpu()).abs().max().item()
                assert error <= 2e-2 * scale, f"{architecture}: outputs differ by {error} (scale {scale}) on {prompt[:40]!r}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import_comfyui()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    for architecture, family in (("clip_l", "sd1"), ("clip_g", "sdxl_refiner")):
        state = random_hf_state(architecture)
        for device in devices:
            implementations = {
                "ComfyUI (float16 weights, default)": comfy_encoder(architecture, state, torch.float16, device),
                "ComfyUI (float32 weights)": comfy_encoder(architecture, state, torch.float32, device)}
            for dtype in [torch.float32] if device.type == "cpu" else [torch.float16, torch.float32]:
                ours = load_text_encoder(state, family=family, dtype=dtype, device=device).encode
                agree(ours, implementations["ComfyUI (float32 weights)"], architecture)
                implementations[f"ours ({str(dtype).removeprefix('torch.')} weights)"] = ours
            rates = prompts_per_second(implementations, args.repeats, device)
            baseline = rates["ComfyUI (float16 weights, default)"]
            rows += [(architecture, device.type, name, rate, rate / baseline) for name, rate in rates.items()]
            print(*rows[-len(rates):], sep="\n", flush=True)
            del implementations
    lines = ["# Text encoding speed: prompts per second (higher is better)", "",
             f"{len(PROMPTS)} prompts (1, 1, 1 and 3 windows), encoded one at a time; median of {args.repeats} passes, taking turns; "
             f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
             + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU") + ".", "",
             "| encoder | device | implementation | prompts/s | vs ComfyUI default |", "|---|---|---|---:|---:|"]
    lines += [f"| {a} | {d} | {name} | {rate:.2f} | {ratio:.2f}x |" for a, d, name, rate, ratio in rows]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "text_encode.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {RESULTS / 'text_encode.md'}")


if __name__ == "__main__":
    main()
