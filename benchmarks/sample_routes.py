"""What Sample's two routes cost (CPU): the pack's own guidance against ComfyUI's guider (nodes/host_sampling.py),
the same work on the same weights, with SamplerCustom on the same MODEL beside them.

The guider route is forced by a key that changes nothing (a timestep range of 0 to 1), so all three give the same
latent (checked). Rounds alternate between the routes and each reports its best (other processes only slow a round
down). Writes benchmarks/results/sample_routes_<device>.md. Run: .venv/bin/python benchmarks/sample_routes.py
"""
import argparse
import time
from pathlib import Path

import torch

from diffusion_blocks.devtools.comfy_host import import_comfyui
from diffusion_blocks.networks.families import FAMILIES
from diffusion_blocks.networks.prediction import TrainingSpec
from diffusion_blocks.networks.unet import UNet, UNetConfig

ROOT = Path(__file__).resolve().parents[1]


def routes(config, size, steps, cfg):
    """name -> a function sampling `steps` Euler steps at cfg from seeded noise, returning the latent."""
    import comfy.sample
    import comfy.samplers

    from diffusion_blocks.nodes.sample_nodes import run_sampling
    from diffusion_blocks.nodes.sampler_nodes import make_sampler
    from diffusion_blocks.nodes.unet_nodes import unet_wire
    from diffusion_blocks.schedules import get_sigmas

    torch.manual_seed(0)
    network = UNet(config).eval().requires_grad_(False)
    network.trained_as = TrainingSpec()
    unet = unet_wire(network)
    generator = torch.Generator().manual_seed(1)
    positive = [[torch.randn(1, 77, config.context_dim, generator=generator), {}]]
    negative = [[torch.randn(1, 77, config.context_dim, generator=generator), {}]]
    whole_range = [[positive[0][0], {"start_percent": 0.0, "end_percent": 1.0}]]
    sigmas = get_sigmas("karras", steps=steps, sigma_min=0.03, sigma_max=10.0)
    latent = {"samples": torch.zeros(1, config.latent_channels, size, size)}
    sampler = make_sampler("euler")

    def sample(conditioning):
        return run_sampling(unet, sampler, sigmas, latent, 0, cfg, conditioning, negative)[0].samples

    def sampler_custom():
        noise = comfy.sample.prepare_noise(latent["samples"], 0)
        return comfy.sample.sample_custom(unet.clone(), noise, cfg, sampler, sigmas, positive, negative,
                                          latent["samples"], seed=0)

    return {"Sample, the pack's own guidance": lambda: sample(positive),
            "Sample through ComfyUI's guider": lambda: sample(whole_range),
            "SamplerCustom on the same MODEL": sampler_custom}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=64, help="model_channels of the SD1.5-layout network")
    parser.add_argument("--size", type=int, default=32, help="latent height and width")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    import_comfyui()
    config = UNetConfig(**{**FAMILIES["sd1"].unet.to_dict(), "model_channels": args.width})
    runs = routes(config, args.size, args.steps, cfg=5.0)
    with torch.no_grad():
        latents = {name: run() for name, run in runs.items()}  # also the warm-up
        reference = latents["SamplerCustom on the same MODEL"]
        for name, latent in latents.items():
            error = float((latent - reference).norm() / reference.norm())
            assert error < 1e-4, f"{name} differs from SamplerCustom by {error:.2e}"
        best = dict.fromkeys(runs, float("inf"))
        for round_ in range(args.rounds):
            for name in (list(runs) if round_ % 2 == 0 else list(reversed(runs))):
                start = time.perf_counter()
                runs[name]()
                best[name] = min(best[name], (time.perf_counter() - start) / args.steps)
    lines = [f"# Sample's routes (CPU, {torch.get_num_threads()} threads, torch {torch.__version__})", "",
             f"SD1.5 layout at model_channels {args.width}, {args.size}x{args.size} latents, batch 1, cfg 5 (cond and "
             f"uncond), euler, {args.steps} steps, fp32; best of {args.rounds} alternating rounds. The three give the "
             f"same latent (relative L2 < 1e-4).", "", "| route | ms per step |", "|---|---|"]
    lines += [f"| {name} | {1000 * seconds:.1f} |" for name, seconds in best.items()]
    report = "\n".join(lines) + "\n"
    print(report)
    out = ROOT / "benchmarks" / "results" / "sample_routes_cpu.md"
    out.write_text(report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
