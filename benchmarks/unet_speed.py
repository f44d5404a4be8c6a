"""U-Net speed: our U-Net against ComfyUI's UNetModel on the same weights, the same device, in one run.

For SD1.5 and SDXL (random weights of the exact shapes, shared by both networks) it measures U-Net
evaluations per second (it/s) in four columns: ComfyUI eager, ComfyUI under torch.compile, ours eager,
ours fast (networks.unet.fast: torch.compile, plus channels-last weights on CUDA; on CUDA both compiled
columns use mode "reduce-overhead", i.e. CUDA graphs), and the achieved TFLOP/s (the FLOPs of one
evaluation counted by torch's FlopCounterMode).
Measurements alternate between the networks round by round and report each one's best round: other
processes on the machine can only slow a round down, so the fastest is the least disturbed.

GPU (the issue's setting): fp16, batch 2, SD1.5 at 64x64 latents and SDXL at 128x128.
CPU variant (no GPU): fp32, batch 1, 16x16 latents; the table says which it is.
It also loads an SDXL-shaped fp16 file in a fresh process and reports the RAM peak against the weights.

Writes benchmarks/results/unet_speed_<device>.md. Run: .venv/bin/python benchmarks/unet_speed.py [--device cpu]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from diffusion_blocks.devtools.comfy_host import import_comfyui
from diffusion_blocks.networks.families import FAMILIES as MODEL_FAMILIES
from diffusion_blocks.networks.unet import UNet
from diffusion_blocks.networks.unet.fast import fast_unet
from diffusion_blocks.networks.unet_loading import load_unet, parse_dtype

ROOT = Path(__file__).resolve().parent.parent

RESULTS = ROOT / "benchmarks" / "results"
SETTINGS = {  # device -> (dtype, batch, {model: latent size})
    "cuda": ("fp16", 2, {"SD1.5": 64, "SDXL": 128}),
    "cpu": ("fp32", 1, {"SD1.5": 16, "SDXL": 16}),
}
FAMILIES = {"SD1.5": "sd1", "SDXL": "sdxl"}
COLUMNS = ("ComfyUI eager", "ComfyUI compiled", "ours eager", "ours fast")
TEXT_TOKENS = 77


def import_comfy(device):
    """ComfyUI's UNetModel, with ComfyUI told to stay on the CPU when that is the device measured."""
    import_comfyui(cpu=device == "cpu")
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    return UNetModel


def comfy_kwargs(config):
    """ComfyUI UNetModel's arguments for our config (it lists decoder depths deepest-last)."""
    c = config
    return dict(image_size=32, in_channels=c.in_channels, out_channels=c.out_channels, model_channels=c.model_channels,
                num_res_blocks=list(c.num_res_blocks), channel_mult=list(c.channel_mult), num_heads=c.num_heads,
                num_head_channels=c.head_channels, use_spatial_transformer=True, context_dim=c.context_dim, legacy=False,
                use_linear_in_transformer=c.linear_projection, adm_in_channels=c.adm_in_channels or None,
                num_classes="sequential" if c.adm_in_channels else None, transformer_depth=list(c.transformer_depth),
                transformer_depth_middle=c.transformer_depth_middle,
                transformer_depth_output=list(reversed(c.transformer_depth_output)))


def random_weights(config, dtype, device, seed=0):
    """Every parameter of the architecture, drawn on the device: norms 1, biases 0, weights U(+-1/sqrt(fan_in))."""
    with torch.device("meta"):
        shapes = {key: value.shape for key, value in UNet(config).state_dict().items()}
    generator = torch.Generator(device=device).manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if len(shape) == 1:  # a 1-D weight is a norm's scale, anything else 1-D a bias
            state[key] = torch.full(shape, float(key.endswith(".weight")), dtype=dtype, device=device)
        else:
            bound = 1 / math.sqrt(math.prod(shape[1:]))
            state[key] = (torch.rand(shape, generator=generator, device=device) * 2 - 1).mul_(bound).to(dtype)
    return state


def inputs(config, batch, size, dtype, device, seed=1):
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(batch, config.in_channels, size, size, generator=g, device=device, dtype=dtype)
    t = torch.linspace(999, 1, batch, device=device)
    context = torch.randn(batch, TEXT_TOKENS, config.context_dim, generator=g, device=device, dtype=dtype)
    y = torch.randn(batch, config.adm_in_channels, generator=g, device=device, dtype=dtype) if config.adm_in_channels else None
    return x, t, context, y


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def measure(calls, device, rounds, per_round):
    """Best seconds per call of each callable over rounds measured round-robin (a round: per_round calls of each)."""
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(per_round):
                call()
            synchronize(device)
            times[name].append((time.perf_counter() - start) / per_round)
    return {name: min(values) for name, values in times.items()}


def count_flops(call):
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        call()
    return counter.get_total_flops()


def bench_model(name, device, dtype_name, batch, size, args, UNetModel):
    config, dtype = MODEL_FAMILIES[FAMILIES[name]].unet, parse_dtype(dtype_name)
    started = time.perf_counter()
    state = random_weights(config, dtype, device)
    with torch.device("meta"):
        theirs = UNetModel(**comfy_kwargs(config), dtype=dtype)
    theirs.load_state_dict(state, assign=True)  # both networks hold the very same weight tensors
    theirs = theirs.eval().requires_grad_(False)
    ours = load_unet(state, dtype=dtype, device=device, config=config)
    x, t, context, y = inputs(config, batch, size, dtype, device)
    print(f"[{name}] weights ready in {time.perf_counter() - started:.1f} s", flush=True)

    with torch.inference_mode():
        reference, result = theirs(x, t, context=context, y=y), ours(x, t, context, y)
        difference = ((result.float() - reference.float()).abs().max() / reference.float().abs().max()).item()
        flops = count_flops(lambda: ours(x, t, context, y))
        calls = {"ComfyUI eager": lambda: theirs(x, t, context=context, y=y), "ours eager": lambda: ours(x, t, context, y)}
        compile_seconds, difference_fast = {}, float("nan")
        if not args.no_compile:
            mode = "reduce-overhead" if device == "cuda" else None
            compiled_theirs = torch.compile(theirs, mode=mode, dynamic=False)
            # A second copy of our network on the same weight tensors, so that channels-last (CUDA only: it copies the
            # convolution weights) leaves the eager one as it was and all four are measured in the same rounds.
            fast = fast_unet(load_unet(state, dtype=dtype, device=device, config=config), channels_last=device == "cuda",
                             mode=mode)
            compiled = {"ComfyUI compiled": lambda: compiled_theirs(x, t, context=context, y=y),
                        "ours fast": lambda: fast(x, t, context, y)}
            for column, call in compiled.items():
                start = time.perf_counter()
                for _ in range(3):  # compile, then CUDA-graph warm-up and recording
                    call()
                synchronize(device)
                compile_seconds[column] = time.perf_counter() - start
                print(f"[{name}] {column}: compiled in {compile_seconds[column]:.0f} s", flush=True)
            fast_result = fast(x, t, context, y).float()
            difference_fast = ((fast_result - reference.float()).abs().max() / reference.float().abs().max()).item()
            calls = {column: (calls | compiled)[column] for column in COLUMNS}
        for call in calls.values():  # warm-up: kernels chosen, memory pools filled
            call()
        seconds = measure(calls, device, args.rounds, args.per_round)
    return dict(model=name, device=device, dtype=dtype_name, batch=batch, latent=size, gflop=flops / 1e9,
                it_s={column: 1 / s for column, s in seconds.items()},
                tflop_s={column: flops / s / 1e12 for column, s in seconds.items()},
                compile_s=compile_seconds, relative_difference=difference, relative_difference_fast=difference_fast)


def memory_check(dtype_name="fp16"):
    """Load an SDXL-shaped file (written once, constant-filled) in a fresh process: RAM growth at peak vs weights."""
    config = MODEL_FAMILIES["sdxl"].unet
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sdxl_unet.safetensors"
        write_constant_file(path, config, parse_dtype(dtype_name))
        code = (f"import json, time\nimport torch\n"
                "from diffusion_blocks.networks.unet_loading import load_unet\n"
                "def rss(f): return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith(f))\n"
                f"before = rss('VmRSS:'); start = time.perf_counter()\nunet = load_unet({str(path)!r}, dtype={dtype_name!r})\n"
                "print(json.dumps({'seconds': time.perf_counter() - start, 'before': before, 'peak': rss('VmHWM:'), "
                "'weights': sum(p.numel() * p.element_size() for p in unet.parameters()), 'family': unet.family}))")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures["ratio"] = (figures["peak"] - figures["before"]) / figures["weights"]
    return figures


def write_constant_file(path, config, dtype):
    """A standalone SDXL-shaped U-Net file in the checkpoints' key layout, streamed without holding the weights."""
    names = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}
    with torch.device("meta"):
        shapes = {key: tuple(value.shape) for key, value in UNet(config).state_dict().items()}
    size = torch.empty((), dtype=dtype).element_size()
    header, offset = {}, 0
    for key, shape in shapes.items():
        header[key] = {"dtype": names[dtype], "shape": list(shape), "data_offsets": [offset, offset + math.prod(shape) * size]}
        offset += math.prod(shape) * size
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as out:
        out.write(len(encoded).to_bytes(8, "little"))
        out.write(encoded)
        for shape in shapes.values():
            out.write(torch.full(shape, 0.01, dtype=dtype).view(torch.uint8).numpy().tobytes())


def table(rows, memory):
    lines = ["| model | device | dtype | batch x latent | GFLOP/eval | " + " | ".join(COLUMNS) + " |",
             "|---|---|---|---|---|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [f"{r['it_s'][c]:.3g} it/s ({r['tflop_s'][c]:.3g} TFLOP/s)" if c in r["it_s"] else "-" for c in COLUMNS]
        lines.append(f"| {r['model']} | {r['device']} | {r['dtype']} | {r['batch']} x {r['latent']}x{r['latent']} | "
                     f"{r['gflop']:.0f} | " + " | ".join(cells) + " |")
    notes = [f"- {r['model']}: ours vs ComfyUI max relative difference {r['relative_difference']:.1e} (eager), "
             f"{r['relative_difference_fast']:.1e} (fast); compile time "
             + ", ".join(f"{k} {v:.0f} s" for k, v in r["compile_s"].items()) for r in rows]
    if memory:
        notes.append(f"- Loading SDXL ({memory['family']}) in fp16: weights {memory['weights'] / 1e9:.2f} GB, RAM growth at peak "
                     f"{(memory['peak'] - memory['before']) / 1e9:.2f} GB = {memory['ratio']:.3f}x the weights, "
                     f"{memory['seconds']:.1f} s")
    return "\n".join(lines + [""] + notes)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="SD1.5,SDXL", help="comma-separated: SD1.5, SDXL")
    parser.add_argument("--rounds", type=int, default=None, help="measurement rounds (the best is reported)")
    parser.add_argument("--per-round", type=int, default=None, help="evaluations per network per round")
    parser.add_argument("--no-compile", action="store_true", help="eager columns only")
    parser.add_argument("--skip-memory", action="store_true", help="skip the SDXL RAM-peak check")
    args = parser.parse_args()
    gpu = args.device == "cuda"
    args.rounds = args.rounds or 7
    args.per_round = args.per_round or (10 if gpu else 1)
    dtype_name, batch, sizes = SETTINGS[args.device]
    UNetModel = import_comfy(args.device)
    device_name = torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device_name}, torch {torch.__version__}" + ("" if gpu else " -- CPU variant: small batch and latents"))

    load_before = os.getloadavg()[0]
    rows = []
    for name in args.models.split(","):
        rows.append(bench_model(name, args.device, dtype_name, batch, sizes[name], args, UNetModel))
        if gpu:
            torch.cuda.empty_cache()
    memory = None if args.skip_memory else memory_check()
    report = (f"# U-Net speed ({device_name}{'' if gpu else ', CPU variant'})\n\n"
              f"torch {torch.__version__}; `.venv/bin/python benchmarks/unet_speed.py {' '.join(sys.argv[1:])}`; "
              f"best of {args.rounds} rounds of {args.per_round} evaluations per network; 1-minute load average "
              f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.\n\n{table(rows, memory)}\n")
    print(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"unet_speed_{args.device}.md").write_text(report)


if __name__ == "__main__":
    main()
