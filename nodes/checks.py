"""Every node checks what it is given against its own schema and what it makes, and its errors show no server paths.

`CheckedNode` is the pack's V3 node base: its `__init_subclass__` wraps each node's `execute` so that, before the
node runs, every input is checked against the node's own schema (numbers finite and within min/max, a combo's value
among its options, a linked input of its wire's own type), and after it runs every tensor it makes is finite.
ComfyUI 0.3.75 lets NaN through its min/max check and does not check V3 combo values at all; API-format prompts can
put plain values where a link belongs. An error is a ValueError naming the input and what was expected. The pack's
own exception types leave a node as plain ValueErrors (ComfyUI prints an exception's type with its module, which for
a pack loaded from a file path is the server's path), and absolute paths are cut from every message.
"""
import functools
import inspect
import math
import numbers
import os
import re

import comfy.model_patcher
import comfy.samplers
import folder_paths
import torch
from comfy_api.latest import io

from ..networks.prediction import Denoiser
from .wires import LoadedTextEncoder

PACK = __name__.rsplit(".", 2)[0]  # the package the pack was imported as (a path, when ComfyUI loads it from one)
SHOWN_OPTIONS = 12
POSIX_PATH = re.compile(r"(?<![\w.~/:])/(?:[^\s'\"/]+/)+([^\s'\"/]*)")
WINDOWS_PATH = re.compile(r"\b[A-Za-z]:\\(?:[^\s'\"\\]+\\)+([^\s'\"\\]*)")


class CheckedNode(io.ComfyNode):
    """A V3 node whose `execute` is checked: inputs against its schema, outputs finite, errors plain and path-free."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        execute = cls.__dict__.get("execute")
        # ComfyUI clones node classes before running them (shallow_clone_class, lock_class): already wrapped then.
        if isinstance(execute, classmethod) and not getattr(execute.__func__, "checked_node", False):
            cls.execute = classmethod(_checked_execute(cls, execute.__func__))


def _checked_execute(owner, execute):
    """`execute` with its inputs checked first, its outputs checked after, and its errors made plain."""
    names = list(inspect.signature(execute).parameters)[1:]  # ComfyUI passes inputs by name; a caller may not

    if inspect.iscoroutinefunction(execute):
        @functools.wraps(execute)
        async def checked(cls, *args, **inputs):
            inputs = {**dict(zip(names, args)), **inputs}
            check_inputs(owner, inputs)
            try:
                return check_outputs(owner, await execute(cls, **inputs), inputs)
            except Exception as error:
                _raise_plain(error)
    else:
        @functools.wraps(execute)
        def checked(cls, *args, **inputs):
            inputs = {**dict(zip(names, args)), **inputs}
            check_inputs(owner, inputs)
            try:
                return check_outputs(owner, execute(cls, **inputs), inputs)
            except Exception as error:
                _raise_plain(error)
    checked.checked_node = True
    return checked


# ---- inputs -----------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _schema(owner):
    """The node's schema (its inputs' names, kinds, limits and options)."""
    return owner.define_schema()


def check_inputs(owner, inputs: dict) -> None:
    """Every input of the node checked against its schema; a ValueError naming the first one at fault."""
    schema = _schema(owner)
    declared = {i.id: i for i in schema.inputs}
    unknown = sorted(set(inputs) - set(declared))
    if unknown:
        raise ValueError(f"{unknown[0]}: {schema.node_id} has no input of that name; its inputs are "
                         f"{', '.join(declared)}")
    for name, spec in declared.items():
        if name not in inputs:
            continue  # Python says so when a required one is missing
        problem = input_problem(spec, inputs[name])
        if problem and spec.get_io_type() == "COMBO":  # the model folders may have changed since the schema was read
            fresh = {i.id: i for i in owner.define_schema().inputs}[name]
            problem = input_problem(fresh, inputs[name])
        if problem:
            raise ValueError(f"{name}: {problem}")


def input_problem(spec, value) -> str | None:
    """What is wrong with `value` for the input `spec` (None when nothing is)."""
    kind = str(spec.get_io_type())
    if value is None:
        return None if spec.optional else f"nothing connected; expected {_expected(kind)}"
    kinds = kind.split(",")  # a socket that takes several types (io.MultiType)
    problems = [check(spec, value) for check in (WIDGETS.get(k) or WIRES.get(k) for k in kinds) if check]
    if not problems or None in problems:
        return None
    if len(problems) == 1:
        return problems[0]
    wanted = " or ".join(p.split(", got ")[0].removeprefix("expected ") for p in problems)
    return f"expected {wanted}, got {_describe(value)}"


def _number(spec, value, whole):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if whole else numbers.Real):
        return f"expected {'a whole number' if whole else 'a number'}{_limits(spec)}, got {_describe(value)}"
    if not whole and not math.isfinite(value):
        return f"expected a finite number{_limits(spec)}, got {value}"
    low, high = getattr(spec, "min", None), getattr(spec, "max", None)
    if (low is not None and value < low) or (high is not None and value > high):
        return f"{_number_text(value)} is out of range: expected a number{_limits(spec)}"
    return None


def _limits(spec):
    low, high = getattr(spec, "min", None), getattr(spec, "max", None)
    if low is not None and high is not None:
        return f" from {_number_text(low)} to {_number_text(high)}"
    if low is not None:
        return f" of at least {_number_text(low)}"
    return f" of at most {_number_text(high)}" if high is not None else ""


def _number_text(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


def _combo(spec, value):
    options = list(spec.options or [])
    if value in options:
        return None
    shown = ", ".join(repr(o) for o in options[:SHOWN_OPTIONS])
    more = f" and {len(options) - SHOWN_OPTIONS} more" if len(options) > SHOWN_OPTIONS else ""
    return f"{_describe(value)} is not one of its options ({shown or 'none'}{more})"


def _of_type(kind, what):
    return lambda spec, value: None if isinstance(value, kind) else f"expected {what}, got {_describe(value)}"


WIDGETS = {
    "INT": lambda spec, value: _number(spec, value, whole=True),
    "FLOAT": lambda spec, value: _number(spec, value, whole=False),
    "BOOLEAN": _of_type(bool, "true or false"),
    "STRING": _of_type(str, "text"),
    "COMBO": _combo,
}


def _tensor_problem(value, what, ndim=None, finite=False):
    if not isinstance(value, torch.Tensor):
        return f"expected {what}, got {_describe(value)}"
    if ndim is not None and value.ndim != ndim:
        return f"expected {what}, got a {value.ndim}-D tensor of shape {tuple(value.shape)}"
    if not (value.is_floating_point()):
        return f"expected {what}, got a tensor of {value.dtype}"
    if finite and not torch.isfinite(value).all():
        return f"holds NaN or infinite values; expected {what} of finite numbers"
    return None


def _latent(spec, value):
    what = "a LATENT (a dict with a 4-D float tensor 'samples', B x C x H x W)"
    if not isinstance(value, dict) or "samples" not in value:
        return f"expected {what}, got {_describe(value)}"
    problem = _tensor_problem(value["samples"], what, ndim=4)
    if problem is None and 0 in value["samples"].shape:
        problem = f"expected {what}, got an empty tensor of shape {tuple(value['samples'].shape)}"
    return problem


def _image(spec, value):
    what = "an IMAGE (a 4-D float tensor B x H x W x C, C = 3 or 4)"
    problem = _tensor_problem(value, what, ndim=4)
    if problem is None and (value.shape[-1] not in (3, 4) or 0 in value.shape):
        problem = f"expected {what}, got shape {tuple(value.shape)}"
    return problem


def _conditioning(spec, value):
    what = "CONDITIONING (a non-empty list of [tensor, dict] pairs, as a text encoder gives)"
    if not isinstance(value, (list, tuple)) or not value:
        return f"expected {what}, got {_describe(value)}"
    for k, entry in enumerate(value):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], torch.Tensor)
                and isinstance(entry[1], dict)):
            return f"expected {what}; entry {k} is {_describe(entry)}"
    return None


def _unet(spec, value):
    if isinstance(value, comfy.model_patcher.ModelPatcher) and isinstance(getattr(value.model, "denoiser", None),
                                                                                    Denoiser):
        return None
    return f"expected the pack's U-Net wire (DB_UNET, from Load U-Net), got {_describe(value)}"


def _text_encoder(spec, value):
    if isinstance(value, LoadedTextEncoder):
        return None
    return f"expected the pack's text encoder wire (DB_TEXT_ENCODER, from Load Text Encoder), got {_describe(value)}"


def _vae(spec, value):
    return None if callable(getattr(value, "decode", None)) else f"expected a VAE (Load VAE), got {_describe(value)}"


WIRES = {
    "LATENT": _latent,
    "IMAGE": _image,
    "SIGMAS": lambda spec, value: _tensor_problem(value, "SIGMAS (a 1-D float tensor of noise levels)", ndim=1,
                                                  finite=True),
    "SAMPLER": _of_type(comfy.samplers.KSAMPLER, "a SAMPLER (a k-diffusion sampler: a sampler node or KSamplerSelect)"),
    "CONDITIONING": _conditioning,
    "MODEL": _of_type(comfy.model_patcher.ModelPatcher, "a MODEL (a ComfyUI model, e.g. from Load Checkpoint)"),
    "VAE": _vae,
    "DB_UNET": _unet,
    "DB_TEXT_ENCODER": _text_encoder,
}


def _expected(kind):
    return {"COMBO": "one of its options", "INT": "a whole number", "FLOAT": "a number", "STRING": "text",
            "BOOLEAN": "true or false"}.get(kind, f"a {kind} wire")


def _describe(value) -> str:
    """A short, safe description of a value for an error message."""
    if isinstance(value, (str, numbers.Number)) and not isinstance(value, bool):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "...'"
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, dict):
        keys = ", ".join(repr(k) for k in list(value)[:6])
        return f"a dict with keys [{keys}{', ...' if len(value) > 6 else ''}]"
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} item{'s' if len(value) != 1 else ''}"
    return f"a {type(value).__name__}"


# ---- outputs ----------------------------------------------------------------------------------------------------


def check_outputs(owner, output, inputs: dict):
    """The node's output unchanged, once every tensor it makes (SIGMAS, LATENT, IMAGE, CONDITIONING) is finite."""
    values = output.result if isinstance(output, io.NodeOutput) else output
    if not isinstance(values, tuple):
        return output
    for spec, value in zip(_schema(owner).outputs, values):
        if not all(torch.isfinite(t).all() for t in _tensors(str(spec.io_type), value)):
            settings = ", ".join(f"{k}={_describe(v)}" for k, v in inputs.items()
                                 if isinstance(v, numbers.Number) and not isinstance(v, bool))
            name = spec.display_name or str(spec.io_type).lower()
            hint = "; a prompt weight too large?" if str(spec.io_type) == "CONDITIONING" else ""
            raise ValueError(f"{name}: this node made NaN or infinite values from its inputs"
                             f"{' (' + settings + ')' if settings else ''}{hint}; check them and the wires feeding it")
    return output


def _tensors(kind, value):
    if kind in ("SIGMAS", "IMAGE") and isinstance(value, torch.Tensor):
        return [value]
    if kind == "LATENT" and isinstance(value, dict) and isinstance(value.get("samples"), torch.Tensor):
        return [value["samples"]]
    if kind == "CONDITIONING" and isinstance(value, list):
        found = []
        for entry in value:
            found += [t for t in (entry[0], entry[1].get("pooled_output")) if isinstance(t, torch.Tensor)]
        return found
    return []


# ---- errors -----------------------------------------------------------------------------------------------------


def _raise_plain(error):
    """Re-raise `error` as ComfyUI should show it: the pack's own types as ValueError, no absolute paths."""
    plain = plain_error(error)
    if plain is error:
        raise error
    raise plain from None


def plain_error(error: BaseException) -> BaseException:
    """The error as a shared server may show it: the pack's own exception types become ValueError (their module name
    carries the server's path), and absolute paths in the message become file names."""
    message = str(error)
    cleaned = without_server_paths(message)
    module = type(error).__module__ or ""
    if module == PACK or module.startswith(PACK + "."):
        return ValueError(cleaned)
    if cleaned == message:
        return error
    if module == "builtins":
        try:
            return type(error)(cleaned)
        except Exception:  # a builtin type that wants other arguments
            pass
    return ValueError(cleaned)


def _server_folders():
    """The server's folders a message might mention, deepest first."""
    folders = {folder_paths.base_path, folder_paths.models_dir, folder_paths.get_output_directory(),
               folder_paths.get_input_directory(), folder_paths.get_temp_directory(),
               os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.path.expanduser("~")}
    for paths, _ in folder_paths.folder_names_and_paths.values():
        folders.update(paths)
    return sorted((os.path.abspath(f) for f in folders if f), key=len, reverse=True)


def without_server_paths(message: str) -> str:
    """The message with every absolute path cut to what follows the server's folder (a folder alone to its name)."""
    if "/" not in message and "\\" not in message:
        return message
    for folder in _server_folders():
        if len(folder) > 1:
            message = message.replace(folder + os.sep, "")
            name = os.path.basename(folder) or "<server folder>"
            message = re.sub(re.escape(folder) + r"(?![\w.-])", lambda _: name, message)
    message = POSIX_PATH.sub(lambda m: m.group(1) or "<server folder>", message)
    return WINDOWS_PATH.sub(lambda m: m.group(1) or "<server folder>", message)
