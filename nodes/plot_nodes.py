"""View nodes: Plot Sigmas draws noise level against step, Image Grid puts pictures side by side."""
from comfy_api.latest import io

from ..views.grid import image_grid
from ..views.plot import plot_sigmas
from .checks import CheckedNode
from .compat import schema
from .images import to_image_tensor

CATEGORY = "diffusion_blocks/views"
MAX_SERIES = 4


class PlotSigmas(CheckedNode):
    @classmethod
    def define_schema(cls):
        optional = [io.Sigmas.Input(f"sigmas_{i}", optional=True, tooltip=f"Optional schedule number {i} to compare.")
                    for i in range(2, MAX_SERIES + 1)]
        return schema(
            node_id="DB_PlotSigmas", display_name="Plot Sigmas", category=CATEGORY,
            search_aliases=['noise schedule plot', 'schedule graph', 'sigmas chart'],
            description="Draw one to four schedules as noise level against step, with a legend: see where each "
                        "schedule spends its steps.",
            inputs=[io.Sigmas.Input("sigmas_1", tooltip="The schedule to plot."), *optional,
                    io.String.Input("labels", default="", tooltip="Legend names separated by commas, in input order "
                                    "(empty: 'sigmas 1', 'sigmas 2', ...)."),
                    io.Boolean.Input("log_scale", default=True, tooltip="Logarithmic noise axis (a final 0 is drawn on the bottom edge)."),
                    io.Int.Input("width", default=768, min=256, max=4096, step=8, tooltip="Image width in pixels."),
                    io.Int.Input("height", default=512, min=256, max=4096, step=8, tooltip="Image height in pixels.")],
            outputs=[io.Image.Output(display_name="plot", tooltip="The plot as an image.")])

    @classmethod
    def execute(cls, sigmas_1, labels, log_scale, width, height, sigmas_2=None, sigmas_3=None, sigmas_4=None) -> io.NodeOutput:
        inputs = [(i, s) for i, s in enumerate((sigmas_1, sigmas_2, sigmas_3, sigmas_4), start=1) if s is not None]
        names = [name.strip() for name in labels.split(",")] if labels.strip() else []
        legend = [names[k] if k < len(names) and names[k] else f"sigmas {i}" for k, (i, _) in enumerate(inputs)]
        for (i, sigmas) in inputs:
            if sigmas.numel() == 0:
                raise ValueError(f"sigmas_{i}: the schedule is empty; nothing to plot")
        picture = plot_sigmas([s.detach().float().cpu().numpy() for _, s in inputs], legend,
                              width=width, height=height, log_scale=log_scale)
        return io.NodeOutput(to_image_tensor(picture))


class ImageGrid(CheckedNode):
    @classmethod
    def define_schema(cls):
        optional = [io.Image.Input(f"images_{i}", optional=True, tooltip=f"Optional images number {i}, placed after the others.")
                    for i in range(2, MAX_SERIES + 1)]
        return schema(
            node_id="DB_ImageGrid", display_name="Image Grid", category=CATEGORY,
            search_aliases=['grid', 'compare images', 'xy plot', 'side by side'],
            description="Put images side by side with a caption under each, e.g. the same prompt through four samplers.",
            inputs=[io.Image.Input("images_1", tooltip="Images (every image of the batch gets a cell)."), *optional,
                    io.String.Input("captions", default="", tooltip="Captions separated by commas, one per image in order."),
                    io.Int.Input("columns", default=0, min=0, max=64, tooltip="Cells per row (0: all on one row)."),
                    io.Int.Input("cell_size", default=256, min=0, max=2048, step=8,
                                 tooltip="Cell size in pixels; small images are enlarged with sharp pixels (0: largest image's size).")],
            outputs=[io.Image.Output(display_name="grid", tooltip="The grid as one image.")])

    @classmethod
    def execute(cls, images_1, captions, columns, cell_size, images_2=None, images_3=None, images_4=None) -> io.NodeOutput:
        batches = [b for b in (images_1, images_2, images_3, images_4) if b is not None]
        pictures = [image.detach().float().cpu().numpy() for batch in batches for image in batch]
        names = [c.strip() for c in captions.split(",")] if captions.strip() else []
        grid = image_grid(pictures, names, columns=columns, cell_size=cell_size)
        return io.NodeOutput(to_image_tensor(grid))


PLOT_NODES = [PlotSigmas, ImageGrid]
