"""What ComfyUI's U-Net protocol costs the pack's U-Net (CPU): the network with no patches against the same network
of an earlier commit (before the hook protocol), side by side on the same weights and inputs; then sampling speed
through ComfyUI with nothing applied, with a LoRA, and with a ControlNet.

Rounds alternate between the two networks and each reports its best round (other processes only slow a round
down). The earlier network is read from git (`git show REV:networks/unet/...`) into a temporary package.
Writes benchmarks/results/unet_protocol_<device>.md. Run: .venv/bin/python benchmarks/unet_protocol.py
"""
import argparse
import importlib
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from diffusion_blocks.devtools.comfy_host import import_comfyui
from diffusion_blocks.networks.families import FAMILIES
from diffusion_blocks.networks.prediction import TrainingSpec
from diffusion_blocks.networks.unet import UNet, UNetConfig

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "4306256"  # the last commit before the hook protocol (networks/unet/hooks.py)
UNET_FILES = ("__init__.py", "config.py", "layers.py", "model.py", "hooks.py")


def earlier_unet_class(revision):
    """networks/unet's UNet as it was at `revision`, imported from a temporary package made from git."""
    folder = Path(tempfile.mkdtemp()) / "earlier_unet"
    folder.mkdir()
    for name in UNET_FILES:
        shown = subprocess.run(["git", "show", f"{revision}:networks/unet/{name}"], cwd=ROOT, capture_output=True,
                               text=True)
        if shown.returncode == 0:
            (folder / name).write_text(shown.stdout)
    (folder / "__init__.py").write_text("")
    spec = importlib.util.spec_from_file_location("earlier_unet", folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    sys.modules["earlier_unet"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules["earlier_unet"])
    return importlib.import_module("earlier_unet.model").UNet


def best_seconds(fns, rounds, calls):
    """Each function's best round (seconds per call), rounds alternating between them, in turn first."""
    best = [float("inf")] * len(fns)
    for round_ in range(rounds):
        for i in (range(len(fns)) if round_ % 2 == 0 else reversed(range(len(fns)))):
            fn = fns[i]
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best[i] = min(best[i], (time.perf_counter() - start) / calls)
    return best


def protocol_cost(config, size, batch, rounds, calls, revision):
    """(earlier s/call, now s/call): one U-Net call with no patches, the same weights and inputs."""
    now = UNet(config).eval().requires_grad_(False)
    earlier = earlier_unet_class(revision)(config).eval().requires_grad_(False)
    earlier.load_state_dict(now.state_dict())
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, config.in_channels, size, size, generator=generator)
    t = torch.full((batch,), 500.0)
    context = torch.randn(batch, 77, config.context_dim, generator=generator)
    with torch.no_grad():
        assert torch.equal(earlier(x, t, context), now(x, t, context)), "the two networks differ"
        return best_seconds([lambda: earlier(x, t, context), lambda: now(x, t, context)], rounds, calls)


def sampling_speeds(config, size, steps, rounds):
    """Seconds per sampling step through ComfyUI's KSampler core: nothing applied, a LoRA on every attention
    projection, a ControlNet of the same layout (random weights)."""
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.sample
    import comfy.sd
    import nodes

    from diffusion_blocks.nodes.native_model import comfy_unet_config
    from diffusion_blocks.nodes.unet_nodes import unet_wire

    torch.manual_seed(0)
    network = UNet(config).eval().requires_grad_(False)
    network.trained_as = TrainingSpec()
    model = unet_wire(network).clone()
    weights = model.model.state_dict()
    lora = {}
    for key, weight in weights.items():
        if ".attn" in key and key.endswith((".to_q.weight", ".to_k.weight", ".to_v.weight")):
            name = key.removesuffix(".weight")
            lora[f"{name}.lora_down.weight"] = 0.1 * torch.randn(8, weight.shape[1])
            lora[f"{name}.lora_up.weight"] = 0.1 * torch.randn(weight.shape[0], 8)
    with_lora, _ = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0.0)
    unet_config = {k: v for k, v in comfy_unet_config(config).items()
                   if k not in ("out_channels", "transformer_depth_output", "num_classes")}
    control_network = comfy.cldm.cldm.ControlNet(hint_channels=3, **unet_config)
    for p in control_network.parameters():
        p.data.normal_(0.0, 0.02)
    control = comfy.controlnet.ControlNet(control_network.eval().requires_grad_(False),
                                          load_device=torch.device("cpu"))
    text = [[torch.randn(1, 77, config.context_dim), {}]]
    negative = [[torch.zeros(1, 77, config.context_dim), {}]]
    hint = torch.rand(1, 8 * size, 8 * size, 3)
    controlled = nodes.ControlNetApplyAdvanced().apply_controlnet(text, negative, control, hint, 1.0, 0.0, 1.0)
    noise = torch.randn(1, 4, size, size)
    runs = {"no patches": (model, text, negative), "LoRA (rank 8, every attention q/k/v)": (with_lora, text, negative),
            "ControlNet (same layout)": (model, *controlled)}

    def step_seconds(model, positive, negative):
        start = time.perf_counter()
        with torch.no_grad():
            comfy.sample.sample(model, noise, steps, 5.0, "euler", "normal", positive, negative,
                                torch.zeros_like(noise), seed=0, disable_pbar=True)
        return (time.perf_counter() - start) / steps

    return {name: min(step_seconds(*run) for _ in range(rounds)) for name, run in runs.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the earlier U-Net")
    parser.add_argument("--width", type=int, default=64, help="model_channels of the SD1.5-layout network")
    parser.add_argument("--size", type=int, default=32, help="latent height and width")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--calls", type=int, default=3, help="U-Net calls per round")
    parser.add_argument("--steps", type=int, default=4, help="sampling steps per sampling round")
    args = parser.parse_args()
    import_comfyui()
    config = UNetConfig(**{**FAMILIES["sd1"].unet.to_dict(), "model_channels": args.width})
    earlier, now = protocol_cost(config, args.size, args.batch, args.rounds, args.calls, args.baseline)
    lines = [f"# U-Net protocol cost (CPU, {torch.get_num_threads()} threads, torch {torch.__version__})", "",
             f"SD1.5 layout at model_channels {args.width}, {args.size}x{args.size} latents, batch {args.batch}, "
             f"fp32; best of {args.rounds} alternating rounds of {args.calls} calls.", "",
             "| network | ms per call |", "|---|---|",
             f"| earlier ({args.baseline}, no hook protocol) | {1000 * earlier:.1f} |",
             f"| now, no patches | {1000 * now:.1f} |", "",
             f"Cost of the protocol with no patches: {100 * (now / earlier - 1):+.2f}% (goal: at most +2%).", "",
             f"Sampling through ComfyUI's KSampler core (euler, cfg 5, {args.steps} steps, batch 1 with its "
             f"negative), best of {args.rounds // 2 + 1}:", "", "| applied | ms per step |", "|---|---|"]
    lines += [f"| {name} | {1000 * seconds:.1f} |"
              for name, seconds in sampling_speeds(config, args.size, args.steps, args.rounds // 2 + 1).items()]
    report = "\n".join(lines) + "\n"
    print(report)
    out = ROOT / "benchmarks" / "results" / "unet_protocol_cpu.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
