"""Train the pack's text-to-image model: the small U-Net and a 64-wide CLIP text tower, together, from scratch.

v-prediction (Salimans & Ho 2022) on DDPM's linear betas (Ho et al. 2020), timesteps drawn uniformly,
plain mean squared error in v (which weights the clean-image error by 1 + SNR, so the noisiest levels,
where layout and colour are decided, keep their weight); the caption is dropped to the empty prompt 10% of
the time so that classifier-free guidance works (Ho & Salimans 2022). Exponential moving averages of both
networks are what gets exported.

Resumable: the state file in --work is rewritten every --save-every seconds and picked up on restart.
Run:  .venv/bin/python -m diffusion_blocks.training.train --work out/train --steps 8000
  or  .venv/bin/python training/train.py --work out/train --minutes 8 --device cuda
"""
import argparse
import copy
import json
import math
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: relative imports through the pack installed in .venv (make setup)
    __package__ = "diffusion_blocks.training"

import torch
import torch.nn.functional as F

from ..networks.checkpoint import save_checkpoint
from ..networks.clip_text import ARCHITECTURES, ClipTextTransformer
from ..networks.families import FAMILIES
from ..networks.unet import UNet
from ..networks.text_encoder_loading import load_text_encoder
from ..networks.unet_loading import load_unet
from ..networks.weights import SafetensorsFile
from .data import ChunkStream, caption_ids
from .render import render

SPEC = FAMILIES["small"].training
TOWER = ARCHITECTURES["clip_small"]
CAPTION_DROPOUT = 0.1
TRAINED = "diffusion_blocks.trained"
ZERO_INIT = ("out_layers.3.", "proj_out.", "out.2.")  # residual branches and the output start at zero (LDM)


def build():
    """(unet, tower) freshly initialised."""
    unet, tower = UNet(FAMILIES["small"].unet), ClipTextTransformer(TOWER)
    for name, parameter in unet.named_parameters():
        if any(mark in name for mark in ZERO_INIT):
            torch.nn.init.zeros_(parameter)
    torch.nn.init.normal_(tower.token_embedding.weight, std=0.02)
    return unet, tower


def initialise_from(path, unet, tower):
    """Start from an exported model (fine-tuning: new optimiser, new schedule)."""
    unet.load_state_dict(load_unet(path).state_dict())
    tower.load_state_dict(load_text_encoder(path).towers["s"].state_dict())


def learning_rate(step, total, peak, warmup):
    """Linear warm-up, then cosine decay to 5% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def forward_process(images, noise, alphas_cumprod_t):
    """(x_t, v): the noisy sample sqrt(ab) x0 + sqrt(1 - ab) eps and the v target sqrt(ab) eps - sqrt(1 - ab) x0."""
    a, s = alphas_cumprod_t.sqrt(), (1 - alphas_cumprod_t).sqrt()
    return a * images + s * noise, a * noise - s * images


def loss_on(unet, tower, images, tokens, alphas_cumprod):
    """The v-prediction loss of one batch."""
    t = torch.randint(0, len(alphas_cumprod), (images.shape[0],), device=images.device)
    noisy, target = forward_process(images, torch.randn_like(images), alphas_cumprod[t][:, None, None, None])
    context = tower(tokens, layer=-1, norm_hidden=True).hidden
    return F.mse_loss(unet(noisy, t.float(), context).float(), target)


def train(args):
    device = torch.device(args.device)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    unet, tower = build()
    if args.init:
        initialise_from(args.init, unet, tower)
    ema = [copy.deepcopy(unet).eval().requires_grad_(False), copy.deepcopy(tower).eval().requires_grad_(False)]
    state_file = work / "state.pt"
    state = torch.load(state_file, map_location="cpu", weights_only=False) if state_file.exists() else None
    step, seconds = (state["step"], state["seconds"]) if state else (0, 0.0)
    per_chunk = args.chunk // args.batch
    stream = ChunkStream(args.seed, step // per_chunk, args.chunk, args.workers)  # fork before CUDA starts
    for network in (unet, tower, *ema):
        network.to(device)
    unet.train()
    tower.train()
    parameters = list(unet.parameters()) + list(tower.parameters())
    optimiser = torch.optim.AdamW(parameters, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    total = args.steps
    if state:
        unet.load_state_dict(state["unet"]); tower.load_state_dict(state["tower"])
        ema[0].load_state_dict(state["ema_unet"]); ema[1].load_state_dict(state["ema_tower"])
        optimiser.load_state_dict(state["optimiser"])
        torch.set_rng_state(state["rng"])
        total = state["total"] if args.minutes else args.steps  # a longer --steps extends the run
        print(f"resumed at step {step} of {total}", flush=True)
    alphas_cumprod = (1 / (1 + SPEC.schedule().sigmas.double() ** 2)).float().to(device)
    empty = torch.from_numpy(caption_ids("")).long().to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    started, last_save, losses = time.perf_counter() - seconds, time.perf_counter(), []
    log = open(work / "loss.log", "a")
    chunk, tokens_all, within = None, None, per_chunk
    try:
        while step < total:
            if chunk is None or within == per_chunk:
                scenes, tokens_all = stream.get()
                chunk, within = scenes.to(device), step % per_chunk if chunk is None else 0
                tokens_all = tokens_all.to(device)
            rows = slice(within * args.batch, (within + 1) * args.batch)
            images = render(chunk[rows])
            tokens = tokens_all[rows]
            dropped = torch.rand(tokens.shape[0], device=device) < CAPTION_DROPOUT
            tokens = torch.where(dropped[:, None], empty, tokens)
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(step, total, args.lr, args.warmup)
            with autocast:
                loss = loss_on(unet, tower, images, tokens, alphas_cumprod)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimiser.step()
            decay = min(args.ema, (1 + step) / (10 + step))
            with torch.no_grad():
                for averaged, live in zip(ema, (unet, tower)):
                    torch._foreach_lerp_(list(averaged.parameters()), list(live.parameters()), 1 - decay)
            step, within = step + 1, within + 1
            losses.append(loss.detach())
            if step == args.calibrate // 4:
                calibration_start = time.perf_counter()
            if step == args.calibrate and args.minutes:
                rate = (step - args.calibrate // 4) / (time.perf_counter() - calibration_start)
                total = max(step + 1, step + int((args.minutes * 60 - (time.perf_counter() - started)) * rate))
                print(f"{rate:.1f} steps/s: training {total} steps in {args.minutes} min", flush=True)
            if step % args.log_every == 0 or step == total:
                mean = torch.stack(losses).mean().item()
                losses.clear()
                line = json.dumps({"step": step, "loss": round(mean, 5), "lr": round(optimiser.param_groups[0]["lr"], 7),
                                   "seconds": round(time.perf_counter() - started, 1)})
                print(line, flush=True)
                log.write(line + "\n"); log.flush()
            if time.perf_counter() - last_save > args.save_every or step == total:
                save_state(state_file, unet, tower, ema, optimiser, step, total, time.perf_counter() - started)
                export(ema, work / "model.safetensors", step, time.perf_counter() - started, args)
                last_save = time.perf_counter()
    finally:
        stream.close()
    return ema


def save_state(path, unet, tower, ema, optimiser, step, total, seconds):
    """Everything a resumed run needs, written atomically."""
    temporary = path.with_suffix(".tmp")
    torch.save({"unet": unet.state_dict(), "tower": tower.state_dict(), "ema_unet": ema[0].state_dict(),
                "ema_tower": ema[1].state_dict(), "optimiser": optimiser.state_dict(), "step": step, "total": total,
                "seconds": seconds, "rng": torch.get_rng_state()}, temporary)
    temporary.replace(path)


def export(ema, path, step, seconds, args):
    """The averaged networks as one fp16 checkpoint the pack's loaders read; a fine-tune records what it began from."""
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    record = {"steps": step, "batch": args.batch, "seconds": round(seconds), "device": device, "seed": args.seed,
              "lr": args.lr}
    if args.init:
        record["from"] = training_record(args.init)
    save_checkpoint(path, ema[0], ema[1], SPEC, dtype=torch.float16, metadata={TRAINED: json.dumps(record)})


def training_record(path):
    """The training record stored in an exported model."""
    return json.loads(SafetensorsFile(path).metadata.get(TRAINED, "{}"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", required=True, help="folder for the state, the loss log and model.safetensors")
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--minutes", type=float, default=0.0, help="instead of --steps: as many steps as fit")
    parser.add_argument("--calibrate", type=int, default=200, help="steps timed before --minutes sets the total")
    parser.add_argument("--init", help="an exported model.safetensors to fine-tune from")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=4096, help="scenes per data chunk (a multiple of --batch)")
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="data processes (0: in the training process)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--save-every", type=float, default=60.0, help="seconds between state saves")
    args = parser.parse_args(argv)
    if args.chunk % args.batch:
        parser.error("--chunk must be a multiple of --batch")
    if args.minutes:
        args.steps = 10**9
    train(args)


if __name__ == "__main__":
    main()
