"""Seconds per image of the bundled text-to-image model: through a warm ComfyUI server, and in-process.

The server is started once and warmed up with one prompt; then each round times, from POST /prompt until
/history has the entry, the text-to-image workflow (64x64, 20 steps of dpmpp_2m on the Karras schedule, cfg 5)
with a new seed (ComfyUI reuses the loaded models and encoded prompts) and with a new prompt and seed (the
prompt is encoded again), and, in this process, pipeline.text_to_image on the same settings (the
core alone: prompt and empty negative encoded, 20 guided steps, no ComfyUI). The three take turns round by
round and the median counts, so a busy machine biases none of them. CPU seconds per image (the server
process's, or this one's) are given too: on a shared machine they say more than the wall time.
Writes benchmarks/results/generate_speed.md. Run: .venv/bin/python benchmarks/generate_speed.py [--rounds N]
"""
import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the server runs (devtools/server.py)
os.environ.setdefault("GOMP_SPINCOUNT", "20000")
import torch  # noqa: E402

from diffusion_blocks.devtools.server import ComfyServer  # noqa: E402
from diffusion_blocks.networks import load_text_encoder, load_unet  # noqa: E402
from diffusion_blocks.pipeline import text_to_image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WORKFLOW = ROOT / "example_workflows" / "api" / "text_to_image.json"
BUNDLED = ROOT / "models" / "diffusion_blocks_shapes.safetensors"
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "gray")
TARGET_S = 3.0


def caption(i):
    return f"a {COLOURS[i % 8]} circle left of a {COLOURS[(i + 3) % 8]} square on a white background"


def process_cpu_seconds(pid):
    """CPU time (user + system, all threads) a process has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_prompt(server, workflow, poll_s=0.01):
    """(wall seconds from POST /prompt until /history holds the finished prompt, server CPU seconds meanwhile)."""
    cpu, start = process_cpu_seconds(server.process.pid), time.perf_counter()
    prompt_id = server.queue(workflow)
    while prompt_id not in server.get(f"/history/{prompt_id}"):
        time.sleep(poll_s)
    elapsed, cpu = time.perf_counter() - start, process_cpu_seconds(server.process.pid) - cpu
    if server.get(f"/history/{prompt_id}")[prompt_id]["status"]["status_str"] != "success":
        raise RuntimeError(f"the workflow failed:\n{server.log()[-3000:]}")
    return elapsed, cpu


def timed_core(unet, encoder, prompt, seed):
    """(wall seconds, CPU seconds of this process) of one in-process image."""
    cpu, start = time.process_time(), time.perf_counter()
    text_to_image(unet, encoder, [prompt], [seed])
    return time.perf_counter() - start, time.process_time() - cpu


def with_inputs(workflow, seed, prompt=None):
    workflow = json.loads(json.dumps(workflow))
    workflow["9"]["inputs"]["seed"] = seed
    if prompt is not None:
        workflow["3"]["inputs"]["text"] = prompt
    return workflow


def table(times):
    lines = ["| route | median wall s/image | min | max | median CPU s/image | target (wall) |",
             "|---|---:|---:|---:|---:|---:|"]
    for route, pairs in times.items():
        walls, cpus = zip(*pairs)
        lines.append(f"| {route} | {statistics.median(walls):.2f} | {min(walls):.2f} | {max(walls):.2f} | "
                     f"{statistics.median(cpus):.2f} | <= {TARGET_S:g} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    workflow = json.loads(WORKFLOW.read_text())
    unet, encoder = load_unet(BUNDLED), load_text_encoder(BUNDLED)
    times = {"ComfyUI, new seed": [], "ComfyUI, new prompt and seed": [], "in-process core": []}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as home, ComfyServer(home) as server:
        timed_prompt(server, workflow)  # warm-up: models loaded, prompts encoded
        text_to_image(unet, encoder, [caption(0)], [0])
        for r in range(1, args.rounds + 1):
            times["ComfyUI, new seed"].append(timed_prompt(server, with_inputs(workflow, seed=r)))
            times["ComfyUI, new prompt and seed"].append(
                timed_prompt(server, with_inputs(workflow, seed=100 + r, prompt=caption(r))))
            times["in-process core"].append(timed_core(unet, encoder, caption(r), 200 + r))
            print(f"round {r}: " + ", ".join(f"{v[-1][0]:.2f} s" for v in times.values()), flush=True)
    report = (f"# Text to image speed: seconds per 64x64 image (lower is better)\n\n"
              f"Bundled shapes model, 20 steps of dpmpp_2m on the Karras schedule, cfg 5 (cond and uncond in one "
              f"batch), float32; median of {args.rounds} rounds, routes taking turns. ComfyUI: warm server, from "
              f"POST /prompt to the /history entry. torch {torch.__version__}, {torch.get_num_threads()} CPU "
              f"threads on {os.cpu_count()} cores, load average {load_before:.1f} at the start (a shared machine), "
              f"everything on the CPU.\n\n{table(times)}\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "generate_speed.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
