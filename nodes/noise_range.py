"""The node boundary for noise levels: a native MODEL's model_sampling becomes our noise table."""
from functools import lru_cache

import comfy.model_sampling

from ..networks.families import FAMILIES
from ..schedules import FlowSchedule, ModelSchedule, SCHEDULES, get_sigmas

SD1_SIGMA_MIN, SD1_SIGMA_MAX = 0.0291675, 14.614642


@lru_cache(maxsize=1)
def sd1_table():
    """Stable Diffusion 1.x's discrete noise table (its family's training schedule)."""
    return FAMILIES["sd1"].training.schedule()


def table_from_model(model):
    """Our noise table for a native ComfyUI MODEL, read from its model_sampling object."""
    sampling = model.get_model_object("model_sampling")
    if isinstance(sampling, comfy.model_sampling.ModelSamplingDiscreteFlow):
        return FlowSchedule(shift=float(sampling.shift), multiplier=float(sampling.multiplier))
    table = getattr(sampling, "sigmas", None)
    if table is None or table.ndim != 1 or table.numel() < 2:
        raise ValueError(f"model: its noise schedule ({type(sampling).__name__}) has no noise table; "
                         "disconnect the model and set sigma_min / sigma_max instead")
    return ModelSchedule(table)


def sigmas_for_node(name, steps, denoise, model=None, sigma_min=None, sigma_max=None, **options):
    """Compute a schedule for a node: the noise table and range come from the MODEL if connected, else
    the range from the widgets and, for table schedules, SD1.x's table."""
    spec = SCHEDULES[name]
    reads_model = spec.needs_table or bool(spec.bounds)
    if model is not None and reads_model:
        return get_sigmas(name, steps, model=table_from_model(model), denoise=denoise, **options)
    widgets = {"sigma_min": sigma_min, "sigma_max": sigma_max}
    bounds = {bound: widgets[bound] for bound in spec.bounds}
    table = sd1_table() if spec.needs_table else None
    return get_sigmas(name, steps, model=table, denoise=denoise, **bounds, **options)
