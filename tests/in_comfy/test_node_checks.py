"""Every node of the pack checks its inputs against its own schema, its outputs for NaN, and shows no server paths.

Driven by the schemas: for every node and every input, NaN / inf / below min / above max for numbers, an unknown
value for combos, a plain value or another wire's value for links; each must be a ValueError that names the input.
The valid values used alongside pass the same check (the positive control), so each error is the bad value's."""
import math
from types import SimpleNamespace

import pytest
import torch

from harness.nodes import run_node

from diffusion_blocks.networks.prediction import TrainingSpec
from diffusion_blocks.networks.unet import UNet, UNetConfig

TINY = UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1),
                  transformer_depth=(0, 1), transformer_depth_output=(1, 1, 0, 0), context_dim=64, num_heads=-1,
                  head_channels=32)
PLAIN_VALUES = ("foo", {"samples": "foo"}, 3.0)
ACCEPTS_OTHER_WIRE = {("MODEL", "DB_UNET")}  # the U-Net wire is a ModelPatcher, which is what MODEL is
MULTI = ","  # a socket of several types (io.MultiType) takes each of them


@pytest.fixture(scope="module", autouse=True)
def a_lora(comfy, tmp_path_factory):
    """One file in ComfyUI's loras folder, so that a LoRA choice has a valid value (removed after)."""
    import folder_paths
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("loras")
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(1, 1)}, folder / "any.safetensors")
    folder_paths.add_model_folder_path("loras", str(folder))
    yield
    folder_paths.folder_names_and_paths["loras"][0].remove(str(folder))


@pytest.fixture(scope="module")
def wires(comfy):
    """One valid value of every wire type the pack's nodes take."""
    import comfy.model_patcher
    import comfy.samplers

    from diffusion_blocks.nodes.wires import LoadedTextEncoder
    from diffusion_blocks.nodes.unet_nodes import unet_wire
    from diffusion_blocks.samplers import SAMPLERS

    cpu = torch.device("cpu")
    network = UNet(TINY)
    network.trained_as = TrainingSpec(latent_scale=1.0)
    unet = unet_wire(network)
    return {
        "DB_UNET": unet,
        "MODEL": comfy.model_patcher.ModelPatcher(torch.nn.Module(), load_device=cpu, offload_device=cpu),
        "LATENT": {"samples": torch.zeros(1, 3, 8, 8)},
        "SIGMAS": torch.tensor([14.6, 1.0, 0.0]),
        "SAMPLER": comfy.samplers.KSAMPLER(SAMPLERS["euler"]),
        "CONDITIONING": [[torch.zeros(1, 5, 64), {}]],
        "IMAGE": torch.zeros(1, 8, 8, 3),
        "VAE": SimpleNamespace(decode=lambda latent: latent),
        "DB_TEXT_ENCODER": LoadedTextEncoder(encoder=None, patcher=None, name="tiny"),
    }


def kind(spec):
    return str(spec.get_io_type())


def valid_value(spec, wires):
    if kind(spec) == "COMBO":
        return spec.default if spec.default is not None else spec.options[0]
    if kind(spec) in ("INT", "FLOAT", "STRING", "BOOLEAN"):
        default = spec.default
        if default is None:
            default = {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[kind(spec)]
            default = max(default, spec.min) if getattr(spec, "min", None) is not None else default
        return default
    return wires[kind(spec).split(MULTI)[0]]


def bad_values(spec, wires):
    """(label, value) pairs that the input must refuse."""
    name = kind(spec)
    if name in ("INT", "FLOAT"):
        cases = [("text", "12")]
        if name == "FLOAT":
            cases += [("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf)]
        else:
            cases += [("fraction", 1.5)]
        if spec.min is not None:
            cases.append(("below min", spec.min - max(1, abs(spec.min))))
        if spec.max is not None:
            cases.append(("above max", spec.max + max(1, abs(spec.max))))
        return cases
    if name == "COMBO":
        return [("unknown option", "no such option"), ("number", 3)]
    if name == "STRING":
        return [("number", 12)]
    if name == "BOOLEAN":
        return [("text", "yes")]
    taken = name.split(MULTI)
    others = [(f"a {other} wire", value) for other, value in wires.items()
              if other not in taken and not any((one, other) in ACCEPTS_OTHER_WIRE for one in taken)]
    return [(f"plain {type(v).__name__}", v) for v in PLAIN_VALUES] + others


def cases(pack_nodes, wires):
    for node_id, cls in sorted(pack_nodes.items()):
        inputs = cls.define_schema().inputs
        valid = {spec.id: valid_value(spec, wires) for spec in inputs}
        for spec in inputs:
            for label, value in bad_values(spec, wires):
                yield node_id, cls, valid, spec, label, value


def test_every_node_goes_through_the_checks(pack_nodes):
    from diffusion_blocks.nodes.checks import CheckedNode

    assert len(pack_nodes) >= 44
    unchecked = [node_id for node_id, cls in pack_nodes.items() if not issubclass(cls, CheckedNode)]
    assert unchecked == []
    assert all(getattr(cls.execute.__func__, "checked_node", False) for cls in pack_nodes.values())


def test_the_valid_values_pass_every_nodes_checks(pack_nodes, wires):
    """The positive control: with these values no check fires, so each refusal below is the bad value's."""
    from diffusion_blocks.nodes.checks import check_inputs

    for node_id, cls in pack_nodes.items():
        check_inputs(cls, {spec.id: valid_value(spec, wires) for spec in cls.define_schema().inputs})


def test_every_input_of_every_node_refuses_bad_values_by_name(pack_nodes, wires):
    """NaN, inf, out of range, unknown options, plain values and other wires: a ValueError naming the input, before the
    node does anything (the refusal comes from its schema, not from deep inside)."""
    failures, count, seen_inputs = [], 0, set()
    for node_id, cls, valid, spec, label, value in cases(pack_nodes, wires):
        count += 1
        seen_inputs.add((node_id, spec.id))
        try:
            run_node(cls, **{**valid, spec.id: value})
        except ValueError as error:
            if not str(error).startswith(f"{spec.id}: "):
                failures.append(f"{node_id}.{spec.id} <- {label}: {error}")
            continue
        except Exception as error:  # noqa: BLE001 - any other type is a failure to report
            failures.append(f"{node_id}.{spec.id} <- {label}: {type(error).__name__}: {error}")
            continue
        failures.append(f"{node_id}.{spec.id} <- {label}: accepted")
    assert failures == []
    all_inputs = {(node_id, spec.id) for node_id, cls in pack_nodes.items() for spec in cls.define_schema().inputs}
    assert seen_inputs == all_inputs
    assert count > 500


@pytest.mark.parametrize("node_id, inputs, message", [
    ("DB_LoadUNet", dict(weight_dtype="default", prediction="auto", zero_snr="maybe"),
     r"^zero_snr: 'maybe' is not one of its options \('auto', 'off', 'on'\)$"),
    ("DB_LoadTextEncoder", dict(second_file="none", family="auto", dtype="int8"), r"^dtype: 'int8' is not one of its "),
    ("DB_Sample", dict(cfg=math.nan), r"^cfg: expected a finite number from 0 to 100, got nan$"),
    ("DB_AncestralSampler", dict(sampler="euler_ancestral", eta=math.nan, s_noise=1.0),
     r"^eta: expected a finite number from 0 to 100, got nan$"),
    ("DB_SetFirstSigma", dict(sigma=math.nan), r"^sigma: expected a finite number from 0 to 20000, got nan$"),
    ("DB_PredictNoise", dict(sigma=math.inf), r"^sigma: expected a finite number from 0 to 5000, got inf$"),
    ("DB_Sample", dict(unet="foo"), r"^unet: expected the pack's U-Net wire \(DB_UNET, from Load U-Net\) or a MODEL "
                                    r"\(a ComfyUI model, e.g. from Load Checkpoint\), got 'foo'$"),
    ("DB_CompareAtEqualCost", dict(unet="foo"),
     r"^unet: expected the pack's U-Net wire \(DB_UNET, from Load U-Net\), got 'foo'$"),
    ("DB_Sample", dict(latent={"a": 1}), r"^latent: expected a LATENT \(a dict with a 4-D float tensor 'samples', "
                                         r"B x C x H x W\), got a dict with keys \['a'\]$"),
    ("DB_Sample", dict(positive=[]), r"^positive: expected CONDITIONING \(a non-empty list"),
    ("DB_DenoisingTrajectory", dict(noisy_view="nope"), r"^noisy_view: 'nope' is not one of its options"),
    ("DB_KarrasSchedule", dict(bogus=1), r"^bogus: DB_KarrasSchedule has no input of that name"),
])
def test_the_issues_cases_are_clear(pack_nodes, wires, node_id, inputs, message):
    cls = pack_nodes[node_id]
    valid = {spec.id: valid_value(spec, wires) for spec in cls.define_schema().inputs}
    with pytest.raises(ValueError, match=message):
        run_node(cls, **{**valid, **inputs})


def test_a_required_input_given_nothing_is_named(pack_nodes, wires):
    cls = pack_nodes["DB_FlipSigmas"]
    with pytest.raises(ValueError, match=r"^sigmas: nothing connected; expected a SIGMAS wire$"):
        run_node(cls, sigmas=None)


def test_what_a_node_makes_is_checked_too(pack_nodes):
    """1e38 is a float32 noise level, 100 times it is not: the output check names the output and the factor."""
    sigmas = torch.tensor([1e38, 1.0, 0.0])
    assert torch.equal(run_node(pack_nodes["DB_MultiplySigmas"], sigmas=sigmas, factor=2.0)[0], sigmas * 2)
    with pytest.raises(ValueError, match=r"^sigmas: this node made NaN or infinite values from its inputs "
                                         r"\(factor=100\.0\)"):
        run_node(pack_nodes["DB_MultiplySigmas"], sigmas=sigmas, factor=100.0)


def test_set_first_sigma_0_into_sample_is_an_error_not_a_black_picture(pack_nodes, wires):
    """The issue's case through the nodes: the pipeline's check of the network's output names the schedule."""
    sigmas, = run_node(pack_nodes["DB_SetFirstSigma"], sigmas=torch.tensor([14.6, 1.0, 0.0]), sigma=0.0)
    inputs = dict(unet=wires["DB_UNET"], sampler=wires["SAMPLER"], latent=wires["LATENT"], seed=0, cfg=1.0)
    with pytest.raises(ValueError, match=r"^sigmas: the schedule starts at noise level 0 \(a Set First Sigma of 0\?\)"):
        run_node(pack_nodes["DB_Sample"], sigmas=sigmas, **inputs)
    latent, denoised = run_node(pack_nodes["DB_Sample"], sigmas=torch.tensor([14.6, 1.0, 0.0]), **inputs)
    assert torch.isfinite(latent["samples"]).all() and latent["samples"].shape == (1, 3, 8, 8)


def test_comfyuis_clone_of_a_node_is_checked_once(pack_nodes):
    """ComfyUI runs a locked clone of the node class; the clone keeps the one wrapped execute (no double wrapping)."""
    from comfy_api.internal import make_locked_method_func

    cls = pack_nodes["DB_KarrasSchedule"]
    clone = cls.PREPARE_CLASS_CLONE({})
    assert clone.execute.__func__ is cls.execute.__func__
    run = make_locked_method_func(cls, cls.FUNCTION, clone)
    good = dict(steps=4, denoise=1.0, rho=7.0, sigma_max=14.6, sigma_min=0.03)
    assert torch.equal(run(**good).result[0], run_node(cls, **good)[0])
    with pytest.raises(ValueError, match="^rho: expected a finite number"):
        run(**{**good, "rho": math.nan})


def test_the_packs_own_errors_leave_a_node_as_plain_value_errors_without_paths(pack_nodes, comfy, tmp_path):
    """ComfyUI prints an exception's type as module.qualname, and the pack's module carries the server's path."""
    import folder_paths

    folder = tmp_path / "diffusion_models"
    folder.mkdir()
    (folder / "not_a_unet.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00[1,2,3] ")
    folder_paths.add_model_folder_path("diffusion_models", str(folder))
    with pytest.raises(ValueError) as caught:
        run_node(pack_nodes["DB_LoadUNet"], unet_name="diffusion_models/not_a_unet.safetensors",
                 weight_dtype="fp32", prediction="auto", zero_snr="auto")
    assert type(caught.value) is ValueError
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert str(caught.value).startswith("not_a_unet.safetensors: ")
    assert str(tmp_path) not in str(caught.value)


def test_absolute_paths_are_cut_from_messages(comfy):
    import folder_paths

    from diffusion_blocks.networks.weights import WeightFileError
    from diffusion_blocks.nodes.checks import plain_error, without_server_paths

    checkpoint = f"{folder_paths.models_dir}/checkpoints/sub/model.safetensors"
    assert without_server_paths(f"cannot read {checkpoint}: cut") == "cannot read sub/model.safetensors: cut"
    assert without_server_paths("no file in /srv/elsewhere/embeddings/x.pt, nor C:\\models\\y.pt") == \
        "no file in x.pt, nor y.pt"
    assert without_server_paths("1/8 of the size, 'folder/name', 3 x 4") == "1/8 of the size, 'folder/name', 3 x 4"
    plain = plain_error(WeightFileError("model.safetensors: truncated"))
    assert type(plain) is ValueError and str(plain) == "model.safetensors: truncated"
    kept = RuntimeError("no path here")
    assert plain_error(kept) is kept
    moved = plain_error(FileNotFoundError(f"[Errno 2] No such file: '{checkpoint}'"))
    assert type(moved) is FileNotFoundError and str(moved) == "[Errno 2] No such file: 'sub/model.safetensors'"
