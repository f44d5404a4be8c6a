"""Weight files: the one .safetensors reader, plain-tensor checkpoints, dtype names, and a clear message for every
malformed file, the same from load_unet and load_text_encoder.

The reference for what a well-formed file holds is the safetensors library itself (safe_open); the malformed
files are written byte by byte after the format's description (huggingface/safetensors README, "Format").
"""
import json
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from diffusion_blocks.networks.text_encoder_loading import load_text_encoder
from diffusion_blocks.networks.unet import UNet, UNetConfig
from diffusion_blocks.networks.unet_loading import METADATA_CONFIG, METADATA_TRAINING, UNetLoadError, load_unet
from diffusion_blocks.networks.weights import (MAX_HEADER_BYTES, SafetensorsFile, WeightFileError, parse_dtype,
                                               read_state_dict)

TENSORS = {"model.diffusion_model.a": torch.arange(6.0).reshape(2, 3), "other.b": torch.ones(2)}
MIXED = {"w": torch.randn(3, 4, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16),
         "h": torch.randn(5, generator=torch.Generator().manual_seed(1)).half(),
         "ids": torch.arange(7)[None], "flag": torch.tensor([True, False]), "empty": torch.zeros(0)}


def test_safetensors_and_checkpoints_give_the_same_tensors(tmp_path):
    save_file(TENSORS, tmp_path / "w.safetensors")
    torch.save({"state_dict": TENSORS, "global_step": 7}, tmp_path / "w.ckpt")
    for name in ("w.safetensors", "w.ckpt"):
        loaded = read_state_dict(tmp_path / name)
        assert loaded.keys() == TENSORS.keys()
        assert all(torch.equal(loaded[k], TENSORS[k]) for k in TENSORS)


def test_header_and_tensors_agree_with_the_safetensors_library(tmp_path):
    path = tmp_path / "mixed.safetensors"
    save_file(MIXED, path, metadata={"modelspec.title": "x", "note": "{}"})
    weights = SafetensorsFile(path)
    with safe_open(str(path), framework="pt") as reference:
        assert weights.metadata == reference.metadata()
        assert set(weights.shapes) == set(reference.keys())
        for key in reference.keys():
            expected = reference.get_tensor(key)
            assert weights.shapes[key] == tuple(expected.shape) and weights.dtypes[key] == expected.dtype
            assert torch.equal(weights.read(key), expected), key
            # floating-point tensors come in the asked dtype; integer and bool ones stay as stored
            wanted = torch.float32 if expected.is_floating_point() else expected.dtype
            assert torch.equal(weights.read(key, torch.float32), expected.to(wanted)), key
        every = weights.read_all(["w", "ids"], dtype=torch.float16)
        assert list(every) == ["w", "ids"] and torch.equal(every["w"], reference.get_tensor("w").half())


def test_pickled_code_is_refused(tmp_path):
    torch.save({"weights": TENSORS, "callable": print}, tmp_path / "evil.ckpt")
    with pytest.raises(WeightFileError, match="evil.ckpt"):
        read_state_dict(tmp_path / "evil.ckpt")


@pytest.mark.parametrize("name, message", [("missing.safetensors", "no such file"), ("w.onnx", "unknown weight format")])
def test_missing_or_unknown_files_are_named(tmp_path, name, message):
    (tmp_path / "w.onnx").write_bytes(b"\0" * 16)
    with pytest.raises(WeightFileError, match=message) as error:
        read_state_dict(tmp_path / name)
    assert str(tmp_path) not in str(error.value)


# ---- malformed .safetensors files ------------------------------------------------------------------


def raw_file(path, header, data=b"", length=None):
    """A .safetensors file written by hand: u64 little-endian header length, the header, then the data."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path


F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
MALFORMED = {
    "no_offsets": ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, "tensor 'a': its header entry has no data_offsets"),
    "list_header": ([{"a": F32_2}], b"\0" * 8, "its header is a JSON list, expected an object"),
    "entry_not_object": ({"a": [0, 8]}, b"\0" * 8, "tensor 'a': its header entry is a JSON list"),
    "metadata_values": ({"__metadata__": {"k": 1}, "a": F32_2}, b"\0" * 8, "__metadata__ entry 'k' is a JSON number, expected text"),
    "metadata_list": ({"__metadata__": ["k"], "a": F32_2}, b"\0" * 8, "__metadata__ is a JSON list"),
    "truncated_data": ({"a": F32_2, "b": {**F32_2, "data_offsets": [8, 16]}}, b"\0" * 12,
                       r"truncated: its header describes \d+ bytes, the file has \d+"),
    "offsets_reversed": ({"a": {**F32_2, "data_offsets": [8, 0]}}, b"\0" * 8, r"tensor 'a': data_offsets \[8, 0\] out of range"),
    "offsets_negative": ({"a": {**F32_2, "data_offsets": [-8, 0]}}, b"\0" * 8, "out of range"),
    "offsets_size": ({"a": {**F32_2, "data_offsets": [0, 4]}}, b"\0" * 8, r"span 4 bytes; F32 \[2\] needs 8"),
    "bad_shape": ({"a": {**F32_2, "shape": [2, "x"]}}, b"\0" * 8, "shape .* is not a list of sizes"),
    "unknown_dtype": ({"a": {**F32_2, "dtype": "F99"}}, b"\0" * 8, "tensor 'a': unknown dtype 'F99'; expected one of F64"),
    "not_json": (b"{not json", b"", "its header is not JSON"),
    "header_too_large": (b"{}", b"", f"header of {MAX_HEADER_BYTES + 1} bytes is over the {MAX_HEADER_BYTES}-byte limit"),
    "header_too_long": (b"{}", b"", "header of 64 bytes does not fit the 10-byte file"),
    "too_short": (None, b"", "3 bytes is too short"),
}
LENGTHS = {"header_too_large": MAX_HEADER_BYTES + 1, "header_too_long": 64}


def malformed(tmp_path, case):
    header, data, _ = MALFORMED[case]
    path = tmp_path / f"{case}.safetensors"
    if header is None:
        path.write_bytes(b"\1\2\3")
        return path
    return raw_file(path, header, data, LENGTHS.get(case))


@pytest.mark.parametrize("case", MALFORMED)
def test_each_malformed_file_is_one_clear_error_from_every_reader(tmp_path, case):
    path = malformed(tmp_path, case)
    expected = f"^{path.name}: not a readable .safetensors file: .*{MALFORMED[case][2]}"
    with pytest.raises(WeightFileError, match=expected) as from_reader:
        SafetensorsFile(path)
    with pytest.raises(WeightFileError, match=expected) as from_state_dict:
        read_state_dict(path)
    with pytest.raises(UNetLoadError, match=expected) as from_unet:
        load_unet(path)
    with pytest.raises(WeightFileError, match=expected) as from_text:
        load_text_encoder(path)
    messages = {str(e.value) for e in (from_reader, from_state_dict, from_unet, from_text)}
    assert len(messages) == 1 and str(tmp_path) not in messages.pop()


def test_a_file_cut_after_its_header_was_read_is_named(tmp_path):
    path = raw_file(tmp_path / "cut.safetensors", {"a": F32_2}, b"\0" * 8)
    weights = SafetensorsFile(path)
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(WeightFileError, match="cut.safetensors: .*truncated while reading 'a'"):
        weights.read("a")


@pytest.mark.parametrize("key, text, what", [(METADATA_CONFIG, "{not json", "a U-Net config"),
                                             (METADATA_CONFIG, '{"model_channels": 32, "colour": 1}', "a U-Net config"),
                                             (METADATA_TRAINING, "[1, 2]", "a training spec"),
                                             (METADATA_TRAINING, '{"prediction": "epsilon"}', "a training spec")])
def test_unreadable_pack_metadata_names_the_key(tmp_path, key, text, what):
    """Issue 11: a diffusion_blocks.* metadata entry that is not what save_unet writes was a bare JSONDecodeError."""
    config = UNetConfig(model_channels=32, channel_mult=(1,), num_res_blocks=(1,), transformer_depth=(0,),
                        transformer_depth_output=(0, 0), context_dim=16, num_heads=2)
    with torch.device("meta"):
        shapes = UNet(config).state_dict()
    metadata = {METADATA_CONFIG: config.to_json(), key: text}
    path = tmp_path / "unet.safetensors"
    save_file({k: torch.zeros(v.shape) for k, v in shapes.items()}, path, metadata=metadata)
    with pytest.raises(UNetLoadError, match=f"^unet.safetensors: metadata '{key}' is not {what} as JSON"):
        load_unet(path)


def test_missing_files_and_folders_are_named_without_their_directories(tmp_path):
    (tmp_path / "empty").mkdir()
    for load in (load_unet, load_text_encoder):
        for target in (tmp_path / "missing.safetensors", tmp_path / "empty"):
            with pytest.raises(WeightFileError) as error:
                load(target)
            assert str(error.value).startswith(target.name + ": ") and str(tmp_path) not in str(error.value)


# ---- dtype names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("names, dtype", [(("fp32", "float32", "FP32", torch.float32), torch.float32),
                                          (("fp16", "float16", "half", "Half", torch.float16), torch.float16),
                                          (("bf16", "bfloat16", torch.bfloat16), torch.bfloat16)])
def test_dtype_names(names, dtype):
    assert all(parse_dtype(name) is dtype for name in names)


@pytest.mark.parametrize("bad", ["fp8", "float64", torch.float64, torch.int8, None, 16])
def test_unknown_dtypes_name_the_input_and_the_choices(bad):
    with pytest.raises(ValueError, match=rf"dtype must be one of float32, float16, bfloat16, fp32, fp16, half, bf16 .*got {bad!r}"):
        parse_dtype(bad)
    for load in (lambda: load_unet({}, dtype=bad), lambda: load_text_encoder({}, dtype=bad)):
        with pytest.raises(ValueError, match="dtype must be one of"):
            load()
