"""Samplers as nodes: each gives a native SAMPLER that ComfyUI's SamplerCustom(Advanced) can run."""
import math
from dataclasses import dataclass

import comfy.model_sampling
import comfy.samplers
from comfy_api.latest import io

from ..samplers import SAMPLER_SPECS, SAMPLERS, NoiseModel, sampler_options
from ..samplers.dpm_solver import DEFAULT_MAX_CALLS
from .checks import CheckedNode
from .compat import schema

CATEGORY = "diffusion_blocks/samplers"
# What people type to find a sampler node (ComfyUI 0.33 searches these; with each family's sampler names).
SEARCH_ALIASES = ("sampler", "k-diffusion", "solver", "ksampler")


@dataclass(frozen=True)
class Family:
    """A sampler node: stable node id, display name, the samplers it offers, the options it shows."""

    node_id: str
    display_name: str
    names: tuple
    options: tuple
    description: str


def _float(default, minimum, maximum, step, tooltip):
    return io.Float, dict(default=default, min=minimum, max=maximum, step=step, round=False, tooltip=tooltip)


def _int(default, minimum, maximum, tooltip):
    return io.Int, dict(default=default, min=minimum, max=maximum, tooltip=tooltip)


def _combo(default, options, tooltip):
    return io.Combo, dict(default=default, options=list(options), tooltip=tooltip)


# Widgets for sampler options; a widget is passed only to the samplers that take that option.
OPTION_WIDGETS = {
    "eta": _float(1.0, 0.0, 100.0, 0.01, "eta: how much fresh noise each step adds back (0: deterministic)."),
    "s_noise": _float(1.0, 0.0, 100.0, 0.01, "s_noise: scale of the added noise (slightly above 1 can add detail)."),
    "s_churn": _float(0.0, 0.0, 100.0, 0.01, "s_churn: total extra noise added along the way (Karras et al. 2022, 'churn'; 0: none)."),
    "s_tmin": _float(0.0, 0.0, 5000.0, 0.01, "s_tmin: churn only at noise levels at or above this."),
    "s_tmax": _float(5000.0, 0.0, 5000.0, 0.01, "s_tmax: churn only at noise levels at or below this (5000: no limit)."),
    "order": _int(0, 0, 4, "order: how many past steps the multistep formula uses (higher: more accurate on smooth "
                           "paths; 0: each sampler's own default)."),
    "solver_type": _combo("midpoint", ("midpoint", "heun"), "solver_type: the second-order correction of DPM++ 2M SDE."),
    "r": _float(0.5, 0.01, 1.0, 0.01, "r: where the intermediate evaluation sits within a step (fraction of the log-noise step)."),
    "predictor_order": _int(3, 1, 6, "predictor_order: Adams predictor order of SA-Solver."),
    "corrector_order": _int(4, 0, 6, "corrector_order: Adams corrector order of SA-Solver (0: no corrector)."),
    "rtol": _float(0.05, 0.0001, 1.0, 0.001, "rtol: relative error allowed per adaptive step (smaller: more steps)."),
    "atol": _float(0.0078, 0.0001, 1.0, 0.0001, "atol: absolute error allowed per adaptive step."),
    "max_calls": _int(DEFAULT_MAX_CALLS, 3, 10_000, "max_calls: the most model calls an adaptive run may make; a run "
                                                     "whose rtol/atol need more stops with an error saying so (about "
                                                     "3 calls per step)."),
}
ORDER_OPTION_NAMES = ("order", "max_order")  # the multistep samplers call their order one of these
# Options a node gained after it was released: optional, so workflows saved before them load (the sampler's default).
ADDED_AFTER_RELEASE = ("max_calls",)

FAMILIES = (
    Family("DB_Sampler", "Sampler (by name)", tuple(SAMPLERS), (),
           "Any sampler by name with its paper's default options: swap samplers with one click."),
    Family("DB_EulerSampler", "Euler / Heun Sampler", ("euler", "heun", "dpm_2", "heunpp2"),
           ("s_churn", "s_tmin", "s_tmax", "s_noise"),
           "ODE samplers of Karras et al. 2022 (Euler: 1 model call per step; Heun, DPM-2: 2; Heun++: up to 3), "
           "with optional 'churn' (noise added and removed again)."),
    Family("DB_AncestralSampler", "Ancestral Sampler",
           ("euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "res_multistep_ancestral", "ddim"),
           ("eta", "s_noise"),
           "Samplers that step below the next noise level and add fresh noise back: eta sets how much."),
    Family("DB_SDESampler", "SDE Sampler", ("dpmpp_2m_sde", "dpmpp_3m_sde", "dpmpp_sde", "seeds_2", "seeds_3", "er_sde"),
           ("eta", "s_noise", "solver_type", "r"),
           "Stochastic differential-equation solvers (DPM-Solver++ SDE, SEEDS, ER-SDE): noise is injected exactly as the reverse SDE says."),
    Family("DB_MultistepSampler", "Multistep Sampler", ("dpmpp_2m", "lms", "deis", "ipndm", "ipndm_v", "uni_pc", "uni_pc_bh2", "res_multistep"),
           ("order",),
           "One model call per step, reusing the previous steps' predictions for higher accuracy (linear multistep, DEIS, iPNDM, UniPC, DPM++ 2M, RES)."),
    Family("DB_SASolverSampler", "SA-Solver Sampler", ("sa_solver", "sa_solver_pece"),
           ("eta", "s_noise", "predictor_order", "corrector_order"),
           "Stochastic Adams predictor-corrector (Xue et al. 2023); PECE calls the model again at each corrected point."),
    Family("DB_AdaptiveSampler", "Adaptive DPM Sampler", ("dpm_adaptive",), ("rtol", "atol", "eta", "s_noise", "max_calls"),
           "DPM-Solver with adaptive step size (Lu et al. 2022): ignores the schedule's steps, keeps the error under rtol/atol."),
)


def _users(option):
    """Which samplers of the pack take an option (its order alias included)."""
    names = ORDER_OPTION_NAMES if option == "order" else (option,)
    return [n for n in SAMPLERS if any(alias in sampler_options(n) for alias in names)]


def _describe(names):
    return "; ".join(f"{n}: {SAMPLER_SPECS[n].summary} ({SAMPLER_SPECS[n].calls_per_step:g} model calls/step, "
                     f"order {SAMPLER_SPECS[n].order}{', stochastic' if SAMPLER_SPECS[n].stochastic else ''})" for n in names)


def _schema_inputs(family):
    inputs = []
    if len(family.names) > 1:
        inputs.append(io.Combo.Input("sampler", options=list(family.names), default=family.names[0],
                                     tooltip="Which sampler. " + _describe(family.names)))
    for option in family.options:
        kind, widget = OPTION_WIDGETS[option]
        users = [n for n in _users(option) if n in family.names]
        widget = {**widget, "tooltip": f"{widget['tooltip']} Used by: {', '.join(users)}."}
        inputs.append(kind.Input(option, optional=option in ADDED_AFTER_RELEASE, **widget))
    return inputs


def options_for(name, widgets):
    """The widget values the chosen sampler takes, under the name it takes them by."""
    accepted = sampler_options(name)
    options = {}
    for option, value in widgets.items():
        if option == "order" and value == 0:
            continue  # the sampler's own default
        aliases = ORDER_OPTION_NAMES if option == "order" else (option,)
        for alias in aliases:
            if alias in accepted:
                options[alias] = value
    if "s_tmax" in options and options["s_tmax"] >= OPTION_WIDGETS["s_tmax"][1]["max"]:
        options["s_tmax"] = math.inf  # the widget's top means "no upper limit"
    return options


def model_options(name, model_sampling):
    """The options of sampler `name` that depend on the model it runs, read from ComfyUI's model sampling: the noise
    model (rectified flow for ComfyUI's CONST: SD3, FLUX, AuraFlow, Wan; its sigma_top where ComfyUI starts its
    log-SNR samplers) and SA-Solver's noise band (20 % to 80 % of the way, as ComfyUI's sa_solver takes it)."""
    options = {}
    percent_to_sigma = getattr(model_sampling, "percent_to_sigma", None)
    if isinstance(model_sampling, comfy.model_sampling.CONST):
        top = float(percent_to_sigma(1e-4)) if percent_to_sigma else NoiseModel("flow").sigma_top
        options["noise_model"] = NoiseModel("flow", sigma_top=top)
    if percent_to_sigma and {"sde_sigma_max", "sde_sigma_min"} <= set(sampler_options(name)):
        options["sde_sigma_max"], options["sde_sigma_min"] = float(percent_to_sigma(0.2)), float(percent_to_sigma(0.8))
    return options


class PackSampler(comfy.samplers.KSAMPLER):
    """ComfyUI's KSAMPLER around one of our samplers that, when it runs, tells the sampler about the model it drives
    (model_options): the sampler function and the options the node chose stay as they are."""

    def __init__(self, name, extra_options):
        super().__init__(SAMPLERS[name], extra_options=extra_options)
        self.name = name

    def sample(self, model_wrap, *args, **kwargs):
        patcher = getattr(model_wrap, "model_patcher", None)
        sampling = (patcher.get_model_object("model_sampling") if patcher is not None
                    else model_wrap.inner_model.model_sampling)
        options = {**model_options(self.name, sampling), **self.extra_options}
        run = comfy.samplers.KSAMPLER(self.sampler_function, options, self.inpaint_options)
        return run.sample(model_wrap, *args, **kwargs)


def make_sampler(name, **options):
    """A native ComfyUI SAMPLER that runs one of our samplers, right for the model it runs (flow or not)."""
    return PackSampler(name, options)


def make_sampler_node(family):
    """A ComfyUI node class for one sampler family."""
    single = len(family.names) == 1

    class SamplerNode(CheckedNode):
        @classmethod
        def define_schema(cls):
            description = family.description + (" " + _describe(family.names) if single else "")
            return schema(node_id=family.node_id, display_name=family.display_name, category=CATEGORY,
                          search_aliases=[*SEARCH_ALIASES, *family.names],
                          description=description, inputs=_schema_inputs(family),
                          outputs=[io.Sampler.Output(display_name="sampler",
                                                     tooltip="Connect to SamplerCustom / SamplerCustomAdvanced or our Sample node.")])

        @classmethod
        def execute(cls, sampler=None, **widgets) -> io.NodeOutput:
            name = sampler or family.names[0]
            if name not in family.names:
                raise ValueError(f"sampler: {name!r} is not one of {', '.join(family.names)}")
            return io.NodeOutput(make_sampler(name, **options_for(name, widgets)))

    SamplerNode.__name__ = SamplerNode.__qualname__ = family.node_id
    return SamplerNode


SAMPLER_NODES = [make_sampler_node(family) for family in FAMILIES]
