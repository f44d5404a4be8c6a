"""U-Net speed: our U-Net against ComfyUI's UNetModel on the same weights, the same device, in one run.

For SD1.5 and SDXL (random weights of the exact shapes, shared by both networks) it measures U-Net evaluations per
second (it/s) in four columns: ComfyUI eager, ComfyUI under torch.compile ("reduce-overhead" on CUDA: CUDA graphs),
ours eager, and ours fast (networks.unet.fast.FastUNet at the loader's "compiled + CUDA graphs": channels-last,
fused GroupNorm+SiLU, fused QKV, text keys/values made once, torch.compile, one CUDA graph per call), with the
achieved TFLOP/s (FLOPs of one evaluation counted by torch's FlopCounterMode), peak GPU memory and compile seconds.
Measurements alternate between the networks round by round and report each one's best round: other processes can
only slow a round down, so the fastest is the least disturbed.

On CUDA it also checks (1) exactness: ours fast and ComfyUI in fp16/bf16 against an fp32 reference on the same
weights; (2) each fast-path transformation on its own (an ablation: the compiled network with one of them off);
(3) torch.profiler's top kernels of ours fast; (4) whole sampling: 20 steps dpmpp_2m + karras with CFG through the
DB_Sample node (standard and compiled + CUDA graphs) against ComfyUI's KSampler core (comfy.sample.sample) on the
same weights, SD1.5 at 512x512, the per-step overhead outside the network, and the PSNR of the fast image against
the eager one. Cases run in order of importance and stop at --budget-s, saying what was skipped.

GPU: SD1.5 at 64x64 latents (batch 1, 2, 4) and SDXL at 128x128 (batch 2), fp16 and bf16.
CPU variant (no GPU): fp32, batch 1, 16x16 latents; the table says which it is. --tiny swaps in small networks
and --compile-backend eager traces without code generation: every code path of the GPU run, in a minute on a CPU.
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
import traceback
from pathlib import Path

import torch

from diffusion_blocks.devtools.comfy_host import import_comfyui
from diffusion_blocks.devtools.compare import relative_error
from diffusion_blocks.networks.families import FAMILIES as MODEL_FAMILIES
from diffusion_blocks.networks.unet import UNet, UNetConfig
from diffusion_blocks.networks.unet.fast import FastUNet
from diffusion_blocks.networks.unet_loading import load_unet, parse_dtype

ROOT = Path(__file__).resolve().parent.parent

RESULTS = ROOT / "benchmarks" / "results"
SIZES = {"cuda": {"SD1.5": 64, "SDXL": 128}, "cpu": {"SD1.5": 16, "SDXL": 16}}  # latent size per model
# (model, dtype, batch) in order of importance; a run stops at its time budget.
CASES = {"cuda": [("SD1.5", "fp16", 2), ("SDXL", "fp16", 2), ("SD1.5", "fp16", 1), ("SD1.5", "fp16", 4),
                  ("SD1.5", "bf16", 2), ("SDXL", "bf16", 2)],
         "cpu": [("SD1.5", "fp32", 1), ("SDXL", "fp32", 1)]}
FAMILIES = {"SD1.5": "sd1", "SDXL": "sdxl"}
TINY = {  # --tiny: each family's layout of attention, projections and conditioning at a small width
    "SD1.5": UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1), transformer_depth=(1, 1),
                        transformer_depth_output=(1, 1, 1, 1), context_dim=64, num_heads=2),
    "SDXL": UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1), transformer_depth=(0, 2),
                       transformer_depth_output=(2, 2, 0, 0), context_dim=64, num_heads=-1, head_channels=16,
                       linear_projection=True, adm_in_channels=64),
}
COLUMNS = ("ComfyUI eager", "ComfyUI compiled", "ours eager", "ours fast")
ABLATIONS = ("channels_last", "fused_norms", "fused_qkv", "cached_kv")
TEXT_TOKENS = 77
SAMPLING = dict(steps=20, sampler="dpmpp_2m", scheduler="karras", cfg=7.5, seed=0)


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


def config_for(name, args):
    return TINY[name] if args.tiny else MODEL_FAMILIES[FAMILIES[name]].unet


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


def peak_memory(device):
    return torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else float("nan")


def reset_peak(device):
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def fast_network(state, config, dtype, device, args, **options):
    """Our network on the same weight tensors as FastUNet (the loader's "compiled + CUDA graphs" by default)."""
    options = {"cuda_graphs": True, "backend": args.compile_backend} | options
    return FastUNet(load_unet(state, dtype=dtype, device=device, config=config), **options)


def warm(column, call, device, compile_seconds, memory):
    """The first calls of a column (compile, CUDA graph capture): their seconds and the peak memory they reach."""
    reset_peak(device)
    start = time.perf_counter()
    for _ in range(3):
        call()
    synchronize(device)
    compile_seconds[column] = time.perf_counter() - start
    memory[column] = peak_memory(device)


def bench_model(name, device, dtype_name, batch, size, args, UNetModel):
    """One table row: it/s, TFLOP/s, compile seconds and peak memory of the four columns; errors against fp32."""
    config, dtype = config_for(name, args), parse_dtype(dtype_name)
    started = time.perf_counter()
    state32 = random_weights(config, torch.float32, device)
    state = {k: v.to(dtype) for k, v in state32.items()}
    with torch.device("meta"):
        theirs = UNetModel(**comfy_kwargs(config), dtype=dtype)
    theirs.load_state_dict(state, assign=True)  # both networks hold the very same weight tensors
    theirs = theirs.eval().requires_grad_(False)
    ours = load_unet(state, dtype=dtype, device=device, config=config)
    x, t, context, y = inputs(config, batch, size, dtype, device)
    print(f"[{name} {dtype_name} b{batch}] weights ready in {time.perf_counter() - started:.1f} s", flush=True)

    errors = {}
    with torch.inference_mode():
        reference = load_unet(state32, device=device, config=config)(x.float(), t, context.float(),
                                                                        None if y is None else y.float())
        del state32
        flops = count_flops(lambda: ours(x, t, context, y))
        calls = {"ComfyUI eager": lambda: theirs(x, t, context=context, y=y), "ours eager": lambda: ours(x, t, context, y)}
        compile_seconds, memory = {}, {}
        if not args.no_compile:
            inductor = args.compile_backend == "inductor"
            mode = "reduce-overhead" if device == "cuda" and inductor else None
            compiled_theirs = torch.compile(theirs, mode=mode, dynamic=False, backend=args.compile_backend)
            fast = fast_network(state, config, dtype, device, args)
            calls["ComfyUI compiled"] = lambda: compiled_theirs(x, t, context=context, y=y).clone()
            calls["ours fast"] = lambda: fast(x, t, context, y)
        calls = {column: calls[column] for column in COLUMNS if column in calls}
        for column, call in calls.items():
            warm(column, call, device, compile_seconds, memory)
            if column.endswith(("compiled", "fast")):
                print(f"[{name} {dtype_name} b{batch}] {column}: first calls (compile) {compile_seconds[column]:.1f} s",
                      flush=True)
            errors[column] = relative_error(call(), reference)
        seconds = measure(calls, device, args.rounds, args.per_round)
        kernels = profile_top_kernels(calls["ours fast"], device) if args.profile and "ours fast" in calls else None
        if "ours fast" in calls:
            print(f"[{name}] attention kernel: {fast.attention_choice}", flush=True)
    return dict(model=name, device=device, dtype=dtype_name, batch=batch, latent=size, gflop=flops / 1e9,
                it_s={column: 1 / s for column, s in seconds.items()},
                tflop_s={column: flops / s / 1e12 for column, s in seconds.items()},
                compile_s=compile_seconds, memory_gb=memory, errors=errors, kernels=kernels)


def profile_top_kernels(call, device, calls=5, rows=15):
    """torch.profiler's table of the kernels (or CPU ops off CUDA) that take the most time in a few calls."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as profiler:
        for _ in range(calls):
            call()
        synchronize(device)
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    return profiler.key_averages().table(sort_by=key, row_limit=rows)


def ablation(name, device, dtype_name, batch, size, args):
    """it/s of ours compiled (no CUDA graphs) with everything, with one transformation off at a time, and with
    CUDA graphs added: what each is worth on its own."""
    config, dtype = config_for(name, args), parse_dtype(dtype_name)
    state = random_weights(config, dtype, device)
    x, t, context, y = inputs(config, batch, size, dtype, device)
    variants = {"compiled, all on": {}} | {f"without {a}": {a: False} for a in ABLATIONS}
    variants["all on + CUDA graphs"] = {"cuda_graphs": True}
    calls, compile_seconds = {}, {}
    with torch.inference_mode():
        for label, options in variants.items():
            network = fast_network(state, config, dtype, device, args, **({"cuda_graphs": False} | options))
            calls[label] = lambda network=network: network(x, t, context, y)
            warm(label, calls[label], device, compile_seconds, {})
            print(f"[ablation {name} b{batch}] {label}: compiled in {compile_seconds[label]:.1f} s", flush=True)
        seconds = measure(calls, device, args.rounds, args.per_round)
    return {label: 1 / s for label, s in seconds.items()}, compile_seconds


def comfy_model(config, state, dtype, device):
    """ComfyUI's own SD1.5 model (BaseModel with its UNetModel) on our weights, in a ModelPatcher: what Load
    Checkpoint gives KSampler."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    model_config = comfy.supported_models.SD15({**comfy_kwargs(config), "use_checkpoint": False})
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({}, "", device=device)
    model.diffusion_model.load_state_dict(state)
    model = model.to(device).eval().requires_grad_(False)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device(device),
                                            offload_device=comfy.model_management.unet_offload_device())


def sampling(device, dtype_name, size, args):
    """20 steps of dpmpp_2m + karras with CFG: ComfyUI's KSampler core against DB_Sample (standard and compiled +
    CUDA graphs) on the same SD1.5 weights; seconds per image, per-step overhead outside the network, PSNR."""
    import comfy.sample

    from diffusion_blocks.nodes.sample_nodes import Sample
    from diffusion_blocks.nodes.sampler_nodes import make_sampler
    from diffusion_blocks.nodes.unet_nodes import unet_wire
    from diffusion_blocks.schedules import get_sigmas

    config, dtype = config_for("SD1.5", args), parse_dtype(dtype_name)
    state = random_weights(config, dtype, device)
    theirs = comfy_model(config, state, dtype, device)
    wires = {speed: unet_wire(load_unet(state, dtype=dtype, device=device, config=config), speed)
             for speed in ("standard", "compiled + CUDA graphs")}
    if args.compile_backend != "inductor":
        wires["compiled + CUDA graphs"].model.denoiser.network.backend = args.compile_backend
    g = torch.Generator().manual_seed(5)
    positive, negative = ([[torch.randn(1, TEXT_TOKENS, config.context_dim, generator=g), {}]] for _ in range(2))
    latent = {"samples": torch.zeros(1, 4, size, size)}
    o = SAMPLING
    sigmas = get_sigmas(o["scheduler"], steps=o["steps"], model=wires["standard"].model.denoiser.schedule)

    def ours(speed):
        out = Sample.execute(unet=wires[speed], sampler=make_sampler(o["sampler"]), sigmas=sigmas, latent=latent,
                             seed=o["seed"], cfg=o["cfg"], positive=positive, negative=negative).result[0]
        return out["samples"]

    def comfyui():
        noise = comfy.sample.prepare_noise(latent["samples"], o["seed"])
        return comfy.sample.sample(theirs, noise, o["steps"], o["cfg"], o["sampler"], o["scheduler"], positive,
                                   negative, latent["samples"], seed=o["seed"], disable_pbar=True)

    calls = {"ComfyUI KSampler": comfyui, "DB_Sample standard": lambda: ours("standard"),
             "DB_Sample compiled + CUDA graphs": lambda: ours("compiled + CUDA graphs")}
    first, images = {}, {}
    for label, call in calls.items():
        start = time.perf_counter()
        images[label] = call().float()
        synchronize(device)
        first[label] = time.perf_counter() - start
        print(f"[sampling] {label}: first image in {first[label]:.1f} s", flush=True)
    seconds = measure(calls, device, args.sampling_rounds, 1)
    network = wires["compiled + CUDA graphs"].model.denoiser.network
    step = network_step_seconds(network, device)
    fast_step = seconds["DB_Sample compiled + CUDA graphs"] / o["steps"]
    return dict(size=size, dtype=dtype_name, seconds=seconds, first=first,
                psnr=psnr(images["DB_Sample compiled + CUDA graphs"], images["DB_Sample standard"]),
                psnr_comfyui=psnr(images["DB_Sample standard"], images["ComfyUI KSampler"]),
                overhead=None if step is None else (fast_step - step) / fast_step, step_ms=step and step * 1e3)


def network_step_seconds(network, device, replays=20):
    """Seconds of one replay of the captured guided step (all the GPU work of a step), None without a graph."""
    graphs = [captured for _, captured in network._graphs.values()]
    if device != "cuda" or not graphs:
        return None
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graphs[-1].graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / replays / 1e3


def psnr(result, reference):
    """Peak signal-to-noise ratio in dB, the peak being the reference's range."""
    mse = (result - reference).pow(2).mean().item()
    peak = (reference.max() - reference.min()).item()
    return float("inf") if mse == 0 else 10 * math.log10(peak**2 / mse)


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
    notes = []
    for r in rows:
        case = f"{r['model']} {r['dtype']} batch {r['batch']}"
        speedups = [f"{a} / {b} = {r['it_s'][a] / r['it_s'][b]:.2f}x" for a, b in
                    (("ours fast", "ComfyUI compiled"), ("ours eager", "ComfyUI eager")) if a in r["it_s"] and b in r["it_s"]]
        notes.append(f"- {case}: " + "; ".join(speedups))
        notes.append(f"  - max error against the fp32 reference (relative to its largest value): "
                     + ", ".join(f"{c} {e:.2e}" for c, e in r["errors"].items())
                     + (f" -- ours fast {'within' if fast_is_exact(r) else 'BEYOND'} ComfyUI's own {r['dtype']} error"
                        if "ours fast" in r["errors"] else ""))
        notes.append("  - first calls (compile, capture) " + ", ".join(f"{c} {s:.1f} s" for c, s in r["compile_s"].items())
                     + "; peak GPU memory " + ", ".join(f"{c} {m:.2f} GB" for c, m in r["memory_gb"].items()))
    if memory:
        notes.append(f"- Loading SDXL ({memory['family']}) in fp16: weights {memory['weights'] / 1e9:.2f} GB, RAM growth at peak "
                     f"{(memory['peak'] - memory['before']) / 1e9:.2f} GB = {memory['ratio']:.3f}x the weights, "
                     f"{memory['seconds']:.1f} s")
    return "\n".join(lines + [""] + notes)


def fast_is_exact(row):
    """The issue's bar: ours fast no further from fp32 than ComfyUI's own network in the same precision (in fp32
    itself both are at rounding level, 1e-5)."""
    return row["errors"]["ours fast"] <= max(1.1 * row["errors"]["ComfyUI eager"], 1e-5)


def ablation_section(results):
    lines = ["## Each fast-path transformation on its own", ""]
    for (name, batch), (it_s, compile_s) in results.items():
        base = it_s["compiled, all on"]
        lines.append(f"{name} batch {batch}: ours compiled, it/s (and against all on):")
        lines += [f"- {label}: {v:.3g} it/s ({v / base:.2f}x), first calls {compile_s[label]:.1f} s" for label, v in it_s.items()]
    return "\n".join(lines)


def sampling_section(s):
    o = SAMPLING
    lines = [f"## Whole sampling: {o['steps']} steps {o['sampler']} + {o['scheduler']}, cfg {o['cfg']}, SD1.5 "
             f"{s['dtype']} at {8 * s['size']}x{8 * s['size']} ({s['size']}x{s['size']} latents)", "",
             "| route | seconds per image | first image (compile) |", "|---|---|---|"]
    lines += [f"| {k} | {v:.3f} | {s['first'][k]:.1f} |" for k, v in s["seconds"].items()]
    fast, theirs = s["seconds"]["DB_Sample compiled + CUDA graphs"], s["seconds"]["ComfyUI KSampler"]
    lines += ["", f"- DB_Sample compiled + CUDA graphs against ComfyUI's KSampler: {theirs / fast:.2f}x",
              f"- PSNR of the fast image against the standard (eager) one: {s['psnr']:.1f} dB; standard against "
              f"ComfyUI's KSampler: {s['psnr_comfyui']:.1f} dB (random weights: latents, not decoded pictures)"]
    if s["overhead"] is not None:
        lines.append(f"- per step: {1e3 * fast / SAMPLING['steps']:.2f} ms, of which the captured step's GPU work "
                     f"{s['step_ms']:.2f} ms: overhead outside the network {100 * s['overhead']:.1f}%")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="SD1.5,SDXL", help="comma-separated: SD1.5, SDXL")
    parser.add_argument("--cases", default=None, help="model:dtype:batch,... (default: the device's list, in order)")
    parser.add_argument("--size", type=int, default=None, help="latent size for every model (default: the device's)")
    parser.add_argument("--rounds", type=int, default=None, help="measurement rounds (the best is reported)")
    parser.add_argument("--per-round", type=int, default=None, help="evaluations per network per round")
    parser.add_argument("--no-compile", action="store_true", help="eager columns only")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend for both compiled columns (eager: trace only, for a quick check)")
    parser.add_argument("--tiny", action="store_true", help="small networks of each family's layout (a quick check)")
    parser.add_argument("--all-columns", action="store_true",
                        help="also on the CPU: ablation, profile and the sampling comparison, as on CUDA")
    parser.add_argument("--skip-memory", action="store_true", help="skip the SDXL RAM-peak check")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no case that would end after this many seconds (default: 420 on CUDA, none on CPU)")
    args = parser.parse_args()
    gpu = args.device == "cuda"
    full = gpu or args.all_columns
    args.budget_s = args.budget_s or (420 if gpu else math.inf)
    args.rounds = args.rounds or (7 if gpu else 3)
    args.per_round = args.per_round or (10 if gpu else 1)
    args.sampling_rounds, args.profile = (3 if gpu else 1), full and not args.no_compile
    cases = ([tuple(c.split(":")) for c in args.cases.split(",")] if args.cases else CASES[args.device])
    cases = [(m, d, int(b)) for m, d, b in cases if m in args.models.split(",")]
    UNetModel = import_comfy(args.device)
    device_name = torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device_name}, torch {torch.__version__}" + ("" if gpu else " -- CPU variant: small batch and latents"))

    started, load_before = time.perf_counter(), os.getloadavg()[0]
    rows, ablations, sampled, skipped, failed, took = [], {}, None, [], [], {}

    def within_budget(what, expected=0.0):
        """Whether `what`, expected to take that many seconds, still ends within the budget."""
        if time.perf_counter() - started + expected < args.budget_s:
            return True
        skipped.append(what)
        print(f"skipped (time budget): {what}", flush=True)
        return False

    def attempt(what, fn, *fn_args):
        """fn(*fn_args), or None with the error printed and listed: one failure does not end a one-shot run."""
        start = time.perf_counter()
        try:
            return fn(*fn_args)
        except Exception as error:  # noqa: BLE001 -- reported in the results, the run goes on
            traceback.print_exc()
            failed.append(f"{what}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
            return None
        finally:
            took[what.split()[0]] = max(took.get(what.split()[0], 0.0), time.perf_counter() - start)
            if gpu:
                torch.cuda.empty_cache()

    def size_of(name):
        return args.size or SIZES[args.device][name]

    for k, (name, dtype_name, batch) in enumerate(cases):
        what = f"{name} {dtype_name} batch {batch}"
        if within_budget(what, took.get(name, 2 * took.get("SD1.5", 0.0))):  # SDXL: about twice SD1.5's time
            row = attempt(what, bench_model, name, args.device, dtype_name, batch, size_of(name), args, UNetModel)
            rows += [row] if row else []
        if k == 0 and full and not args.no_compile:  # the sampling comparison right after the first case
            if within_budget("sampling comparison"):
                sampled = attempt("sampling comparison", sampling, args.device, cases[0][1],
                                  args.size or (64 if gpu else 16), args)
        if k == 1 and full and not args.no_compile:  # the ablation after the two main cases
            name, dtype_name, batch = cases[0]
            if within_budget(f"ablation {name} batch {batch}", 2 * took.get(name, 0.0)):
                result = attempt("ablation", ablation, name, args.device, dtype_name, batch, size_of(name), args)
                ablations.update({(name, batch): result} if result else {})
    memory = None if args.skip_memory else memory_check()
    sections = [table(rows, memory)] + ([sampling_section(sampled)] if sampled else [])
    sections += [ablation_section(ablations)] if ablations else []
    sections += [f"## Top kernels of ours fast ({r['model']} {r['dtype']} batch {r['batch']})\n\n```\n{r['kernels']}\n```"
                 for r in rows[:1] if r["kernels"]]
    sections += [f"Skipped for the time budget ({args.budget_s:.0f} s): {', '.join(skipped)}"] if skipped else []
    sections += ["Failed (traceback in the run's output):\n" + "\n".join(f"- {f}" for f in failed)] if failed else []
    report = (f"# U-Net speed ({device_name}{'' if gpu else ', CPU variant'})\n\n"
              f"torch {torch.__version__}; `.venv/bin/python benchmarks/unet_speed.py {' '.join(sys.argv[1:])}`; "
              f"best of {args.rounds} rounds of {args.per_round} evaluations per network; 1-minute load average "
              f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
              f"{time.perf_counter() - started:.0f} s in all.\n\n" + "\n\n".join(sections) + "\n")
    print(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"unet_speed_{args.device}{'_tiny' if args.tiny else ''}.md").write_text(report)


if __name__ == "__main__":
    main()
