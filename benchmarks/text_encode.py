"""Prompts per second of our text encoders against ComfyUI 0.3.75's, full size, identical random weights.

CLIP ViT-L/14 (SD1.x's, last layer) and OpenCLIP ViT-bigG/14 (SDXL's, penultimate layer, projected
pooled output) are built at full size with the same random weights in both implementations. Each
prompt of a fixed set (short, weighted, 3 windows) is encoded one at a time, as a node does: ours
with TextEncoder.encode, ComfyUI's with its tokenizer's tokenize_with_weights and its model's
encode_token_weights. ComfyUI is measured as it runs by default (weights stored in float16 on the
CPU, computed in float32) and with float32 weights; ours computes in its weights' dtype (float32 on the
CPU; float16 and float32 on a GPU when one is present). Outputs are checked to agree before timing; the
implementations take turns pass by pass and the median pass counts, so a busy machine biases no one.

The tokenizer alone is timed too: the pack's hand-written byte-level BPE (read from git history, commit
OLD_TOKENIZER_COMMIT, the last before the `tokenizers` library took over), the pack's tokenizer now, and
transformers' CLIPTokenizer (what ComfyUI tokenizes with), on the same prompts and on random Unicode text.
Writes benchmarks/results/text_encode.md. Run: .venv/bin/python benchmarks/text_encode.py [--repeats N] [--part P]
"""
import argparse
import importlib.util
import math
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from diffusion_blocks.devtools.comfy_host import import_comfyui
from diffusion_blocks.devtools.paths import comfyui_path
from diffusion_blocks.networks.clip_text import ARCHITECTURES
from diffusion_blocks.networks.clip_tokenizer import DEFAULT_MERGES, ClipTokenizer
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
OLD_TOKENIZER_COMMIT = "e06fce8ea7239eb386fd3649100a9937a6464504"


def old_tokenizer_class():
    """The hand-written tokenizer as it was at OLD_TOKENIZER_COMMIT, or None (with a note) outside a git checkout."""
    try:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_TOKENIZER_COMMIT}:networks/clip_tokenizer.py"],
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"the hand-written tokenizer is not timed: git could not read it ({error})")
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "hand_written_clip_tokenizer.py"
        path.write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location("hand_written_clip_tokenizer", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.ClipTokenizer


def random_unicode_prompts(count=200, seed=0):
    """Prompts of 5 to 40 runs of 1 to 8 random code points (no surrogates): words no cache has seen."""
    rng = random.Random(seed)

    def character():
        code = rng.randrange(0x110000 - 0x800)
        return chr(code + 0x800 if code >= 0xD800 else code)

    return [" ".join("".join(character() for _ in range(rng.randint(1, 8))) for _ in range(rng.randint(5, 40)))
            for _ in range(count)]


def tokenizer_rows(repeats):
    """[(text set, implementation, prompts/s, seconds to build)]: prompts tokenized one at a time, as a node does,
    by a fresh tokenizer each pass (word caches start empty; repeated prompts fill them within the pass)."""
    import transformers

    def transformers_tokenizer():
        tokenize = transformers.CLIPTokenizer.from_pretrained(str(comfyui_path() / "comfy" / "sd1_tokenizer"))
        return lambda text: tokenize(text)["input_ids"]

    factories = {"ours now (tokenizers library)": ClipTokenizer}
    hand_written = old_tokenizer_class()
    if hand_written is not None:
        factories["ours before (hand-written BPE)"] = lambda: hand_written(merges=DEFAULT_MERGES)
    factories["transformers CLIPTokenizer (ComfyUI's)"] = transformers_tokenizer
    reference = transformers_tokenizer()
    for label, factory in factories.items():
        encode = factory()
        assert [encode(p) for p in PROMPTS] == [reference(p) for p in PROMPTS], f"{label} disagrees with transformers"
    rows = []
    for name, texts in (("the 4 prompts above, 25 times", PROMPTS * 25), ("200 random Unicode texts", random_unicode_prompts())):
        seconds, builds = {label: [] for label in factories}, {label: [] for label in factories}
        for _ in range(repeats):
            for label, factory in factories.items():
                started = time.perf_counter()
                encode = factory()
                builds[label].append(time.perf_counter() - started)
                started = time.perf_counter()
                for text in texts:
                    encode(text)
                seconds[label].append(time.perf_counter() - started)
        rows += [(name, label, len(texts) / statistics.median(seconds[label]), statistics.median(builds[label]))
                 for label in factories]
        print(*rows[-len(factories):], sep="\n", flush=True)
    return rows


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


def encoder_rows(repeats):
    """[(encoder, device, implementation, prompts/s, vs ComfyUI's default)] for CLIP-L and bigG, full size."""
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
            rates = prompts_per_second(implementations, repeats, device)
            baseline = rates["ComfyUI (float16 weights, default)"]
            rows += [(architecture, device.type, name, rate, rate / baseline) for name, rate in rates.items()]
            print(*rows[-len(rates):], sep="\n", flush=True)
            del implementations
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--part", choices=["all", "tokenizer", "encoders"], default="all",
                        help="time the tokenizer alone, the whole encoders, or both (default)")
    args = parser.parse_args()
    machine = (f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
               + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"))
    lines = []
    if args.part in ("all", "encoders"):
        rows = encoder_rows(args.repeats)
        lines += ["# Text encoding speed: prompts per second (higher is better)", "",
                  f"{len(PROMPTS)} prompts (1, 1, 1 and 3 windows), encoded one at a time; median of {args.repeats} passes, "
                  f"taking turns; {machine}.", "",
                  "| encoder | device | implementation | prompts/s | vs ComfyUI default |", "|---|---|---|---:|---:|"]
        lines += [f"| {a} | {d} | {name} | {rate:.2f} | {ratio:.2f}x |" for a, d, name, rate, ratio in rows]
        lines.append("")
    if args.part in ("all", "tokenizer"):
        rows = tokenizer_rows(args.repeats)
        lines += ["# CLIP tokenizer alone: prompts per second (higher is better)", "",
                  f"One prompt at a time, a fresh tokenizer each pass; median of {args.repeats} passes, taking turns; "
                  f"{machine}. 'Before' is the hand-written BPE of commit {OLD_TOKENIZER_COMMIT[:7]}.", "",
                  "| texts | implementation | prompts/s | ms to build the tokenizer |", "|---|---|---:|---:|"]
        lines += [f"| {texts} | {name} | {rate:.0f} | {build * 1000:.0f} |" for texts, name, rate, build in rows]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "text_encode.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {RESULTS / 'text_encode.md'}")


if __name__ == "__main__":
    main()
