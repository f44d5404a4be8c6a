"""Fit Schedule and Load Fitted Schedule: a schedule fitted to the user's own model (OSS, Pei et al. 2025), kept in
ComfyUI's user folder by the weights' content hash and the settings, and read back."""
import re
from pathlib import Path

import comfy.model_management
import comfy.model_sampling
import comfy.samplers
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..pipeline.fit_schedule import PAPER, fit_schedule, fittable_samplers, sampler_label
from ..pipeline.digest import fingerprint, value_fingerprint
from ..pipeline.fit_store import load, record, save, settings_key, sigmas_of, weights_hash
from ..pipeline.guidance import Guided
from ..pipeline.noise import start_noise
from ..schedules import get_sigmas
from ..views.plot import plot_sigmas
from .checks import CheckedNode
from .compat import schema
from .images import to_image_tensor
from .sampler_nodes import options_for
from .wires import UNET, checked_latent, conditioning_problem, needs_host, pixel_size, ready, text_condition

CATEGORY = "diffusion_blocks/schedules"
SHIPPED = Path(__file__).resolve().parent.parent / "models" / "diffusion_blocks_shapes.fitted.json"
SHIPPED_PREFIX = "shipped: "


def fits_folder() -> Path:
    """Where fits are kept: <ComfyUI user directory>/diffusion_blocks/fitted_schedules (never the pack's folder)."""
    return Path(folder_paths.get_user_directory()) / "diffusion_blocks" / "fitted_schedules"


def shipped_fits() -> dict[str, dict]:
    """The fits shipped for the bundled model by their Load Fitted Schedule label, e.g. 'shipped:
    diffusion_blocks_shapes uni_pc_bh2 order=1 8 calls'."""
    if not SHIPPED.is_file():
        return {}
    model = SHIPPED.stem.removesuffix(".fitted")
    return {f"{SHIPPED_PREFIX}{model} {sampler_label(fit['sampler'], fit.get('options', {}))} {fit['budget']} calls": fit
            for fit in load(SHIPPED)["fits"]}


def saved_choices() -> list[str]:
    """The Load Fitted Schedule options: the shipped fits of the bundled model, then the user's saved fits."""
    folder = fits_folder()
    saved = sorted(p.name for p in folder.glob("*.json")) if folder.is_dir() else []
    return [*shipped_fits(), *saved]


def _native_fit(model, positive, negative, cfg, latent, noise, fit):
    """Run `fit(denoiser, start)` inside ComfyUI's CFGGuider, whose custom-sampler hook hands a native MODEL over as a
    k-diffusion denoiser with cfg and the conditioning applied; returns fit's result."""
    sampling = model.get_model_object("model_sampling")
    if isinstance(sampling, comfy.model_sampling.CONST):
        raise ValueError("model: a rectified-flow model (SD3, FLUX, ...); Fit Schedule fits variance-exploding "
                         "sampling (SD1.x, SDXL, ...) only")
    sigma_max = float(sampling.sigma_max)
    result = {}

    def inside(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
        result["fit"] = fit(lambda x, sigma, **kw: model_k(x, sigma, **extra_args), x)
        return x

    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    guider.sample(noise, latent, comfy.samplers.KSAMPLER(inside), torch.tensor([sigma_max, 0.0]), disable_pbar=True)
    return result["fit"]


def plain(value):
    """A conditioning's tensors, numbers, strings and their lists and dicts, with any other object (a ControlNet, a
    GLIGEN model) by its type's name: what a fit's memo key can hash."""
    if isinstance(value, (torch.Tensor, bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return type(value).__qualname__


def _name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:60] or "model"


class FitSchedule(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_FitSchedule", display_name="Fit Schedule", category=CATEGORY,
            search_aliases=["optimal steps", "OSS", "fewer steps", "fit sigmas", "GITS", "AYS", "noise schedule"],
            description=f"Fit a schedule to your own model: the noise levels for which a sampler, in a budget of model "
                        f"calls, lands closest to a fine-grid run of the same sampler ({PAPER}, dynamic programming "
                        f"over a grid of noise levels). Slow: hundreds of model calls. The fit is saved in ComfyUI's "
                        f"user folder by the hash of the weights, their patches (LoRAs) and the settings, and an "
                        f"identical fit is loaded, not redone.",
            inputs=[
                UNET.Input("unet", optional=True, tooltip="The pack's noise predictor (Load U-Net). Connect this or "
                                                          "model, not both."),
                io.Model.Input("model", optional=True, tooltip="A native ComfyUI model (SD1.x, SDXL, ...). Connect "
                                                               "this or unet, not both."),
                io.Combo.Input("sampler", options=fittable_samplers(), default="dpmpp_2m",
                               tooltip="The sampler the schedule is for (deterministic ones only)."),
                io.Int.Input("calls", default=8, min=1, max=100,
                             tooltip="Model calls the schedule may cost; steps are the most the sampler can take "
                                     "within them."),
                io.Conditioning.Input("positive", tooltip="The prompt(s) to fit on (a typical prompt of yours)."),
                io.Conditioning.Input("negative", tooltip="The negative prompt (an empty text encoding is fine)."),
                io.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale, as you will sample with."),
                io.Latent.Input("latent", tooltip="The picture size to fit at (Empty Latent); its first item is used."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Start noise of the first fitting sample; sample k uses seed + k."),
                io.Int.Input("seeds", default=4, min=1, max=64,
                             tooltip="How many start noises the fit averages over (more: steadier, slower)."),
                io.Int.Input("grid_size", default=24, min=2, max=200,
                             tooltip="Noise levels the schedule is chosen from (evenly spaced in log sigma over the "
                                     "model's range); cost grows with it."),
                io.Int.Input("teacher_substeps", default=4, min=1, max=32,
                             tooltip="The teacher runs the sampler with this many steps per grid interval."),
                io.Int.Input("order", default=0, min=0, max=4, optional=True,
                             tooltip="For multistep samplers (Multistep Sampler's order): how many past steps the "
                                     "sampler uses, as you will sample with; 0: its own default. Others ignore it. "
                                     "UniPC at order 1 suits few steps with guidance."),
            ],
            outputs=[io.Sigmas.Output(display_name="sigmas", tooltip="The fitted noise levels, highest first, ending "
                                                                       "in 0."),
                     io.Image.Output(display_name="plot", tooltip="The fitted schedule against karras at the same "
                                                                   "steps.")])

    @classmethod
    def execute(cls, sampler, calls, positive, negative, cfg, latent, seed, seeds, grid_size, teacher_substeps,
                unet=None, model=None, order=0) -> io.NodeOutput:
        if (unet is None) == (model is None):
            raise ValueError("unet, model: connect exactly one of them (the pack's U-Net or a native MODEL); "
                             f"got {'both' if unet is not None else 'neither'}")
        if "noise_mask" in latent:
            raise ValueError("latent: carries an inpainting mask (noise_mask), which a schedule fit does not use; fit "
                             "on the picture size alone (Empty Latent)")
        if unet is not None and needs_host(unet, latent, positive, negative):
            unet, model = None, unet  # what only ComfyUI's guider honours: fit through it, as on a native MODEL
        sampler_options = options_for(sampler, {"order": order})
        options = dict(grid_size=grid_size, teacher_substeps=teacher_substeps, sampler_options=sampler_options)
        samples = latent["samples"][:1]
        shape = (seeds, *samples.shape[1:])
        patcher = unet if unet is not None else model
        settings = {"sampler": sampler, "calls": calls, "cfg": cfg, "seed": seed, "seeds": seeds,
                    "shape": list(shape), "grid_size": grid_size, "teacher_substeps": teacher_substeps,
                    **({"sampler_options": sampler_options} if sampler_options else {}),  # older keys stay valid
                    "conditioning": fingerprint(positive[0][0], negative[0][0]),
                    **({"conditioning_rest": value_fingerprint(plain([positive, negative]))}
                       if any(conditioning_problem(c) for c in (positive, negative)) else {}),  # areas, masks, ...
                    "patches": value_fingerprint(patcher.patches)}  # a LoRA and its strength change the model
        progress = comfy.utils.ProgressBar(1)

        def tick(done, total):
            comfy.model_management.throw_exception_if_processing_interrupted()
            progress.update_absolute(done, total)

        if unet is not None:
            denoiser, device = ready(unet)
            network_latent = denoiser.family.latent.to_network(checked_latent(latent, denoiser)[:1].float()).to(device)
            size = pixel_size(denoiser, samples)
            guided = Guided(denoiser, text_condition(positive, denoiser, size),
                            text_condition(negative, denoiser, size, negative=True), cfg, device=device)
            model_hash, model_name = weights_hash(denoiser.network), getattr(denoiser.network, "source_file", None)
            sigma_min, sigma_max = float(denoiser.schedule.sigma_min), float(denoiser.schedule.sigma_max)
        else:
            sampling = model.get_model_object("model_sampling")
            model_hash, model_name = weights_hash(model.model.diffusion_model), "model"
            sigma_min, sigma_max = float(sampling.sigma_min), float(sampling.sigma_max)
        label = sampler_label(sampler, sampler_options)
        path = fits_folder() / f"{_name(Path(model_name or 'unet').stem)}-{_name(label)}-{calls}calls-" \
                               f"{settings_key(model_hash, settings)}.json"
        if path.is_file():
            sigmas, note = sigmas_of(load(path)), f"loaded {path.name}"
        else:
            noise = start_noise(shape, seed)
            if unet is not None:
                fit = fit_schedule(guided, noise.to(device), sigma_min, sigma_max, sampler, calls,
                                   latent=network_latent.expand(shape), progress=tick, **options)
            else:
                fit = _native_fit(model, positive, negative, cfg, samples.expand(shape), noise,
                                  lambda k_model, start: fit_schedule(k_model, start / sigma_max, sigma_min, sigma_max,
                                                                      sampler, calls, progress=tick, **options))
            save(path, record(model_hash, model_name or "model", settings, [fit]))
            sigmas, note = fit.sigmas, fit.note
        karras = get_sigmas("karras", len(sigmas) - 1, sigma_min=sigma_min, sigma_max=sigma_max)
        picture = plot_sigmas([sigmas.numpy(), karras.numpy()], [f"fitted ({label})", "karras"],
                              title=f"Fitted schedule: {note}")
        return io.NodeOutput(sigmas, to_image_tensor(picture))


class LoadFittedSchedule(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_LoadFittedSchedule", display_name="Load Fitted Schedule", category=CATEGORY,
            search_aliases=["optimal steps", "fitted sigmas", "OSS", "noise schedule"],
            description="A schedule fitted earlier by Fit Schedule (kept in ComfyUI's user folder), or one shipped "
                        "with the pack for the bundled shapes model (dpmpp_2m, uni_pc, lms and uni_pc_bh2 at order 1, "
                        "each at 4, 6, 8 and 10 calls; sample with the sampler and order named).",
            inputs=[io.Combo.Input("fit", options=saved_choices(),
                                   tooltip="Which fit: 'shipped: ...' for the bundled model, else a file saved by "
                                           "Fit Schedule (named model-sampler-calls-key).")],
            outputs=[io.Sigmas.Output(display_name="sigmas", tooltip="The fitted noise levels, highest first, ending "
                                                                       "in 0.")])

    @classmethod
    def execute(cls, fit) -> io.NodeOutput:
        if fit.startswith(SHIPPED_PREFIX):
            shipped = shipped_fits()
            if fit not in shipped:
                raise ValueError(f"fit: {fit!r} is not shipped with this version of the pack; choose one of "
                                 f"{', '.join(shipped)}")
            return io.NodeOutput(sigmas_of({"fits": [shipped[fit]]}))
        return io.NodeOutput(sigmas_of(load(fits_folder() / Path(fit).name)))


FIT_NODES = [FitSchedule, LoadFittedSchedule]
