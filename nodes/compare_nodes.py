"""Compare at Equal Cost: samplers x schedules side by side, every picture paid for with the same model calls."""
import comfy.utils
from comfy_api.latest import io

from ..pipeline.equal_cost import compare_at_equal_cost
from ..samplers import SAMPLER_SPECS, SAMPLERS
from ..schedules import SCHEDULES
from ..schedules.validation import check_choice
from ..views.grid import image_grid
from .checks import CheckedNode
from .compat import schema
from .images import to_image_tensor
from .host_sampling import sample_on_host
from .wires import (UNET, checked_latent, denoiser_of, first_item, latent_picture_for, needs_host, pixel_size, ready,
                    text_condition)

CATEGORY = "diffusion_blocks/sampling"
ADAPTIVE = ("dpm_adaptive",)  # its calls depend on the model's answers, so no budget can be fixed in advance


def names(text: str, known, input_name: str, refused=()) -> list[str]:
    """The comma-separated names of a text input, each one of `known` (and not `refused`)."""
    chosen = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not chosen:
        raise ValueError(f"{input_name}: give at least one name, e.g. {', '.join(list(known)[:3])}")
    for name in chosen:
        if name in refused:
            raise ValueError(f"{input_name}: {name!r} is adaptive (its calls depend on the model), so it cannot be "
                             f"compared at a fixed cost")
        try:
            check_choice(name, known, "name")
        except ValueError as error:
            raise ValueError(f"{input_name}: {error}") from None
    return chosen


class CompareAtEqualCost(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_CompareAtEqualCost", display_name="Compare at Equal Cost", category=CATEGORY,
            search_aliases=['compare samplers', 'equal cost', 'model calls', 'sampler comparison'],
            description="A fair comparison: one picture per sampler (rows) and schedule (columns), each given the "
                        "most steps that the same budget of model calls pays for (a Heun step costs two calls, an "
                        "Euler step one), the same seed and the same prompts. The caption says sampler, schedule, "
                        "steps and calls.",
            inputs=[
                UNET.Input("unet", tooltip="The noise predictor (from Load U-Net)."),
                io.String.Input("samplers", default="euler, heun, dpmpp_2m, uni_pc",
                                tooltip="The pack's samplers to compare, by name, separated by commas (one row each): "
                                        + ", ".join(n for n in SAMPLERS if n not in ADAPTIVE) + "."),
                io.String.Input("schedules", default="karras, exponential",
                                tooltip="Schedules over the U-Net's own noise range, by name, separated by commas "
                                        "(one column each): " + ", ".join(SCHEDULES) + "."),
                io.Int.Input("calls", default=20, min=1, max=1000,
                             tooltip="Model calls each picture may use (a guided call counts once). Steps are "
                                     "derived from it for each sampler and schedule."),
                io.Latent.Input("latent", tooltip="Where to start (Empty Latent); the first item of the batch is used."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="One seed for every picture: the start noise and the stochastic samplers' noise."),
                io.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale, the same for every picture."),
                io.Conditioning.Input("positive", optional=True,
                                      tooltip="What the pictures should show. Not connected: a zero text embedding."),
                io.Conditioning.Input("negative", optional=True,
                                      tooltip="What guidance steers away from. Not connected: a zero text embedding."),
                io.Int.Input("cell_size", default=128, min=0, max=1024,
                             tooltip="Size of each picture in the grid in pixels (0: the pictures' own size)."),
                io.Vae.Input("vae", optional=True,
                             tooltip="Optional VAE for SD latents; pixel-space pictures are shown as they are."),
            ],
            outputs=[io.Image.Output(display_name="grid", tooltip="One picture per sampler and schedule, captioned.")])

    @classmethod
    def execute(cls, unet, samplers, schedules, calls, latent, seed, cfg, cell_size, positive=None, negative=None,
                vae=None) -> io.NodeOutput:
        chosen = {name: SAMPLERS[name] for name in names(samplers, SAMPLER_SPECS, "samplers", ADAPTIVE)}
        columns = names(schedules, SCHEDULES, "schedules")
        first = first_item(latent)
        progress = comfy.utils.ProgressBar(1)
        guidance = own_guidance(unet, first, seed, cfg, positive, negative)
        results = compare_at_equal_cost(denoiser_of(unet), chosen, columns, calls, first["samples"], seed,
                                        callback=lambda done, total: progress.update_absolute(done, total), **guidance)
        picture, to_network = latent_picture_for(unet.model.latent_format, vae), unet.model.latent_format.process_in
        grid = image_grid([picture(to_network(samples)) for _, samples in results], [cell.caption for cell, _ in results],
                          columns=len(columns), cell_size=cell_size)
        return io.NodeOutput(to_image_tensor(grid))


def own_guidance(unet, latent: dict, seed: int, cfg: float, positive, negative) -> dict:
    """compare_at_equal_cost's guidance: the pack's own where it honours everything wired in, else a run through
    ComfyUI's guider (nodes.host_sampling) for each cell."""
    denoiser = denoiser_of(unet)
    checked_latent(latent, denoiser, masked=True)
    if needs_host(unet, latent, positive, negative) is None:
        denoiser, device = ready(unet)
        size = pixel_size(denoiser, latent["samples"])
        return dict(cond=text_condition(positive, denoiser, size), device=device, cfg=cfg,
                    uncond=text_condition(negative, denoiser, size, negative=True))

    def run(sampler, sigmas, report):
        return sample_on_host(unet, sampler, {}, sigmas, latent, seed, cfg, positive, negative,
                              callback=report).samples
    return dict(run=run)


COMPARE_NODES = [CompareAtEqualCost]
