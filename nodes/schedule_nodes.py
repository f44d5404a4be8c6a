"""One node per schedule family, each giving native SIGMAS; built from the core's SCHEDULES table."""
from dataclasses import dataclass

from comfy_api.latest import io

from ..schedules import SCHEDULES
from .checks import CheckedNode
from .compat import schema
from .noise_range import SD1_SIGMA_MAX, SD1_SIGMA_MIN, sigmas_for_node

CATEGORY = "diffusion_blocks/schedules"
# What people type to find a schedule node (ComfyUI 0.33 searches these; with each family's schedule names).
SEARCH_ALIASES = ("noise schedule", "scheduler", "sigmas", "timesteps")


@dataclass(frozen=True)
class Family:
    """A schedule node: stable node id, display name, the schedule names it offers, description."""

    node_id: str
    display_name: str
    names: tuple
    description: str


# Node ids are public (saved workflows refer to them): never rename one.
FAMILIES = (
    Family("DB_KarrasSchedule", "Karras Schedule", ("karras",),
           "Noise levels spaced evenly in sigma^(1/rho) (Karras et al. 2022, eq. 5): more steps at low noise as rho grows."),
    Family("DB_ExponentialSchedule", "Exponential Schedule", ("exponential",),
           "Noise levels spaced evenly in log(sigma): a straight line on a log plot."),
    Family("DB_PolyexponentialSchedule", "Polyexponential Schedule", ("polyexponential",),
           "Noise levels spaced evenly in log(sigma) after a polynomial warp of the step index (k-diffusion)."),
    Family("DB_VPSchedule", "VP Schedule", ("vp",),
           "The continuous variance-preserving SDE's noise levels (Song et al. 2021), from beta_min, beta_d and eps_s."),
    Family("DB_LaplaceSchedule", "Laplace Schedule", ("laplace",),
           "Noise levels from a Laplace distribution over log(sigma) (Hang et al. 2024): steps concentrate around mu."),
    Family("DB_KLOptimalSchedule", "KL-Optimal Schedule", ("kl_optimal",),
           "Noise levels evenly spaced in arctan(sigma), minimising a KL bound (Sabour et al. 2024, 'Align Your Steps')."),
    Family("DB_BetaSchedule", "Beta Schedule", ("beta",),
           "Timesteps placed by the Beta(alpha, beta) quantiles (Lee et al. 2024): alpha = beta < 1 puts more steps at both ends."),
    Family("DB_LinearQuadraticSchedule", "Linear-Quadratic Schedule", ("linear_quadratic",),
           "Linear at high noise then quadratic (Mochi / Genmo): a flow-model schedule expressed as noise levels."),
    Family("DB_TimestepSpacingSchedule", "Timestep Spacing Schedule",
           ("simple", "sgm_uniform", "normal", "ddim_uniform", "leading", "trailing", "linspace"),
           "Noise levels read from the model's own noise table at evenly spaced timesteps, in ComfyUI's and diffusers' spacings."),
    Family("DB_AlignYourStepsSchedule", "Align Your Steps Schedule", ("ays_sd1", "ays_sdxl", "ays_svd"),
           "Noise levels optimised per model family (Sabour et al. 2024), log-linearly resampled to the step count."),
    Family("DB_GITSSchedule", "GITS Schedule", ("gits",),
           "Noise levels found by the geometry-inspired time-step search (Chen et al. 2024), chosen by coeff."),
    Family("DB_SDTurboSchedule", "SD Turbo Schedule", ("sd_turbo",),
           "The few-step timesteps SD-Turbo / SDXL-Turbo were distilled for (999, 899, ...), read from the model's table."),
    Family("DB_Schedule", "Schedule (by name)", tuple(SCHEDULES),
           "Any schedule by name with its default options: swap schedules with one click."),
)

def _float(minimum, maximum, step, tooltip):
    return io.Float, dict(min=minimum, max=maximum, step=step, round=False, tooltip=tooltip)


def _int(minimum, maximum, tooltip):
    return io.Int, dict(min=minimum, max=maximum, tooltip=tooltip)


# Widgets for the schedules' options: (schedule, option) -> (input kind, its keywords).
OPTION_WIDGETS = {
    ("karras", "rho"): _float(0.1, 100.0, 0.1, "rho: 7 is the paper's choice; larger values spend more steps at low noise."),
    ("polyexponential", "rho"): _float(0.1, 100.0, 0.1, "rho: 1 is the exponential schedule; larger values spend more steps at low noise."),
    ("vp", "beta_d"): _float(0.0, 5000.0, 0.1, "beta_d: the VP SDE's beta range (beta_max - beta_min)."),
    ("vp", "beta_min"): _float(0.0, 5000.0, 0.01, "beta_min: the VP SDE's smallest beta."),
    ("vp", "eps_s"): _float(0.0, 1.0, 0.0001, "eps_s: the smallest time the schedule reaches (0 < eps_s < 1)."),
    ("laplace", "mu"): _float(-10.0, 10.0, 0.1, "mu: the log-sigma the steps gather around."),
    ("laplace", "beta"): _float(0.01, 10.0, 0.01, "beta: the Laplace scale; smaller gathers the steps more tightly."),
    ("beta", "alpha"): _float(0.01, 50.0, 0.01, "alpha: the Beta distribution's first shape parameter."),
    ("beta", "beta"): _float(0.01, 50.0, 0.01, "beta: the Beta distribution's second shape parameter."),
    ("linear_quadratic", "threshold_noise"): _float(0.0, 1.0, 0.001, "threshold_noise: where the linear part ends, as a fraction of the noise range."),
    ("linear_quadratic", "linear_steps"): _int(0, 10000, "linear_steps: steps in the linear part; 0 means half of the steps."),
    ("gits", "coeff"): _float(0.80, 1.50, 0.05, "coeff: which GITS table (0.80 to 1.50 in 0.05 steps); 1.20 is the paper's default."),
}


def _option_inputs(names):
    """Widgets for the options of a single-schedule family (families of several names use defaults)."""
    if len(names) != 1:
        return []
    name = names[0]
    inputs = []
    for option, default in SCHEDULES[name].params.items():
        kind, widget = OPTION_WIDGETS[(name, option)]
        inputs.append(kind.Input(option, default=0 if default is None else default, **widget))
    return inputs


def _schema_inputs(family):
    specs = [SCHEDULES[name] for name in family.names]
    inputs = []
    if len(family.names) > 1:
        inputs.append(io.Combo.Input("schedule", options=list(family.names), default=family.names[0],
                                     tooltip="Which schedule: " + "; ".join(f"{n}: {SCHEDULES[n].summary}" for n in family.names)))
    inputs += [
        io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Number of sampling steps (the output has steps + 1 noise levels)."),
        io.Float.Input("denoise", default=1.0, min=0.01, max=1.0, step=0.01,
                       tooltip="Fraction of the noise range to cover: the schedule is made for steps / denoise steps "
                               "and only its last steps + 1 levels are kept (image-to-image)."),
    ]
    inputs += _option_inputs(family.names)
    bounds = {bound for spec in specs for bound in spec.bounds}
    if "sigma_max" in bounds:
        inputs.append(io.Float.Input("sigma_max", default=SD1_SIGMA_MAX, min=0.0001, max=5000.0, step=0.01, round=False,
                                     tooltip="Highest noise level (used when no model is connected; default: SD1.x)."))
    if "sigma_min" in bounds:
        inputs.append(io.Float.Input("sigma_min", default=SD1_SIGMA_MIN, min=0.00001, max=5000.0, step=0.001, round=False,
                                     tooltip="Lowest noise level before the final 0 (used when no model is connected; default: SD1.x)."))
    if any(spec.bounds or spec.needs_table for spec in specs):
        inputs.append(io.Model.Input("model", optional=True,
                                     tooltip="Optional: take the noise range and noise table from this model "
                                             "(SD1.x's are used when it is not connected)."))
    return inputs


def make_schedule_node(family):
    """A ComfyUI node class for one schedule family."""

    class ScheduleNode(CheckedNode):
        @classmethod
        def define_schema(cls):
            return schema(node_id=family.node_id, display_name=family.display_name, category=CATEGORY,
                          search_aliases=[*SEARCH_ALIASES, *family.names],
                          description=family.description, inputs=_schema_inputs(family),
                          outputs=[io.Sigmas.Output(display_name="sigmas",
                                                    tooltip="Noise levels, highest first, ending in 0.")])

        @classmethod
        def execute(cls, steps, denoise, schedule=None, model=None, sigma_min=None, sigma_max=None, **options) -> io.NodeOutput:
            name = schedule or family.names[0]
            if name not in family.names:
                raise ValueError(f"schedule: {name!r} is not one of {', '.join(family.names)}")
            if "linear_steps" in options and options["linear_steps"] == 0:
                options["linear_steps"] = None
            return io.NodeOutput(sigmas_for_node(name, steps, denoise, model=model, sigma_min=sigma_min,
                                                 sigma_max=sigma_max, **options))

    ScheduleNode.__name__ = ScheduleNode.__qualname__ = family.node_id
    return ScheduleNode


SCHEDULE_NODES = [make_schedule_node(family) for family in FAMILIES]
