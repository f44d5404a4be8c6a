"""Sigma arithmetic as nodes: split, join, flip, scale, resample and type in noise levels."""
from comfy_api.latest import io

from ..schedules import arithmetic
from .checks import CheckedNode
from .compat import schema

CATEGORY = "diffusion_blocks/sigmas"


def _sigmas_in(name="sigmas", tooltip="Noise levels, highest first."):
    return io.Sigmas.Input(name, tooltip=tooltip)


def _sigmas_out(name="sigmas", tooltip="Noise levels."):
    return io.Sigmas.Output(display_name=name, tooltip=tooltip)


class SplitSigmasAtStep(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_SplitSigmasAtStep", display_name="Split Sigmas at Step", category=CATEGORY,
            search_aliases=['split sigmas', 'noise schedule'],
            description="Cut a schedule in two at a step; both halves share the noise level at the cut, "
                        "so two samplers can run one after the other.",
            inputs=[_sigmas_in(), io.Int.Input("step", default=10, min=0, max=10000,
                                                 tooltip="Index of the noise level where the first part ends and the second begins.")],
            outputs=[_sigmas_out("high", "Levels 0..step (the noisy start)."),
                     _sigmas_out("low", "Levels step..end (the clean finish).")])

    @classmethod
    def execute(cls, sigmas, step) -> io.NodeOutput:
        return io.NodeOutput(*arithmetic.split_at_step(sigmas, step))


class SplitSigmasAtDenoise(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_SplitSigmasAtDenoise", display_name="Split Sigmas at Denoise", category=CATEGORY,
            search_aliases=['split sigmas', 'denoise strength', 'img2img', 'noise schedule'],
            description="Cut a schedule so that the second part covers the last `denoise` fraction of its steps.",
            inputs=[_sigmas_in(), io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                                                 tooltip="Fraction of the steps that go to the second (low-noise) part.")],
            outputs=[_sigmas_out("high", "The first, noisier steps."), _sigmas_out("low", "The last `denoise` fraction of the steps.")])

    @classmethod
    def execute(cls, sigmas, denoise) -> io.NodeOutput:
        return io.NodeOutput(*arithmetic.split_at_denoise(sigmas, denoise))


class ConcatSigmas(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_ConcatSigmas", display_name="Concatenate Sigmas", category=CATEGORY,
            search_aliases=['join sigmas', 'merge schedules', 'noise schedule'],
            description="Join two schedules end to start; a repeated noise level at the joint is kept once.",
            inputs=[_sigmas_in("first", "Runs first (higher noise)."), _sigmas_in("second", "Runs after the first.")],
            outputs=[_sigmas_out()])

    @classmethod
    def execute(cls, first, second) -> io.NodeOutput:
        return io.NodeOutput(arithmetic.concat(first, second))


class FlipSigmas(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_FlipSigmas", display_name="Flip Sigmas", category=CATEGORY,
            search_aliases=['reverse sigmas', 'unsample', 'inversion', 'noise schedule'],
            description="Reverse a schedule so noise rises step by step: run a sampler on it to 'unsample' "
                        "an image back to noise. A leading 0 becomes 1e-4 so the first step is defined.",
            inputs=[_sigmas_in()], outputs=[_sigmas_out(tooltip="Noise levels, lowest first.")])

    @classmethod
    def execute(cls, sigmas) -> io.NodeOutput:
        return io.NodeOutput(arithmetic.flip(sigmas))


class SetFirstSigma(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_SetFirstSigma", display_name="Set First Sigma", category=CATEGORY,
            search_aliases=['start noise level', 'noise schedule'],
            description="Replace the starting noise level, e.g. to start from more or less noise than the schedule says.",
            inputs=[_sigmas_in(), io.Float.Input("sigma", default=14.614642, min=0.0, max=20000.0, step=0.001, round=False,
                                                 tooltip="The new first noise level.")],
            outputs=[_sigmas_out()])

    @classmethod
    def execute(cls, sigmas, sigma) -> io.NodeOutput:
        return io.NodeOutput(arithmetic.set_first(sigmas, sigma))


class MultiplySigmas(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_MultiplySigmas", display_name="Multiply Sigmas", category=CATEGORY,
            search_aliases=['scale sigmas', 'noise schedule'],
            description="Scale every noise level by a factor (below 1 leaves a little noise unremoved at each step).",
            inputs=[_sigmas_in(), io.Float.Input("factor", default=1.0, min=0.0, max=100.0, step=0.001, round=False,
                                                 tooltip="Multiplier for every noise level.")],
            outputs=[_sigmas_out()])

    @classmethod
    def execute(cls, sigmas, factor) -> io.NodeOutput:
        return io.NodeOutput(arithmetic.multiply(sigmas, factor))


class ResampleSigmas(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_ResampleSigmas", display_name="Resample Sigmas", category=CATEGORY,
            search_aliases=['interpolate sigmas', 'change steps', 'noise schedule'],
            description="Stretch or squeeze a schedule to another number of steps, interpolating log(sigma) "
                        "(as Align Your Steps does); a final 0 stays a final 0.",
            inputs=[_sigmas_in(), io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Steps of the new schedule.")],
            outputs=[_sigmas_out()])

    @classmethod
    def execute(cls, sigmas, steps) -> io.NodeOutput:
        return io.NodeOutput(arithmetic.resample(sigmas, steps))


class SigmasFromText(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_SigmasFromText", display_name="Sigmas from Text", category=CATEGORY,
            search_aliases=['manual sigmas', 'custom schedule', 'noise levels'],
            description="Type a schedule as numbers, highest first, e.g. from a paper or another tool.",
            inputs=[io.String.Input("text", multiline=True, default="14.6146, 6.4746, 3.8637, 2.6946, 1.8842, 1.3944, "
                                    "0.9643, 0.6524, 0.3977, 0.1515, 0.0292, 0.0",
                                    tooltip="Noise levels separated by commas, spaces or new lines, in descending order.")],
            outputs=[_sigmas_out()])

    @classmethod
    def execute(cls, text) -> io.NodeOutput:
        return io.NodeOutput(arithmetic.parse_sigmas(text))


class InsertSigmas(CheckedNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="DB_InsertSigmas", display_name="Insert Intermediate Sigmas", category=CATEGORY,
            search_aliases=['intermediate sigmas', 'more steps', 'noise schedule'],
            description="Subdivide every step by inserting noise levels between neighbours (geometric means; "
                        "towards a final 0 the levels are linear).",
            inputs=[_sigmas_in(), io.Int.Input("count", default=1, min=1, max=100,
                                               tooltip="How many noise levels to insert into each step.")],
            outputs=[_sigmas_out()])

    @classmethod
    def execute(cls, sigmas, count) -> io.NodeOutput:
        return io.NodeOutput(arithmetic.insert_intermediate(sigmas, count))


SIGMA_NODES = [SplitSigmasAtStep, SplitSigmasAtDenoise, ConcatSigmas, FlipSigmas, SetFirstSigma,
               MultiplySigmas, ResampleSigmas, SigmasFromText, InsertSigmas]
