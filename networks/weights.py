"""Reading weight files safely: .safetensors preferred, .ckpt/.pt only through torch.load(weights_only=True).

The one .safetensors reader of the pack. The format (huggingface/safetensors, "Format" in its README): 8 bytes,
a little-endian u64 N; N bytes of UTF-8 JSON, an object {name: {"dtype", "shape", "data_offsets": [begin, end]}}
plus an optional "__metadata__" that maps text to text; then the tensors' bytes, offsets counted from the end
of the header. `SafetensorsFile` reads the header alone (shapes, dtypes, metadata: nothing else loaded) and
then one tensor at a time straight into its own buffer, already in the target dtype and device.
Every malformed file is a WeightFileError that names the file (its name only, never its folder) and the fault.
"""
import json
import math
import os
import struct
from collections.abc import Iterable
from pathlib import Path

import torch

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                      "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
MAX_HEADER_BYTES = 100 * 2**20  # the safetensors library's own limit
METADATA_KEY = "__metadata__"
PathLike = str | os.PathLike
Device = str | torch.device

# The weight dtypes the pack's networks run in, by their torch names, and the other names people use for them.
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


class WeightFileError(ValueError):
    """A weight file that cannot be read, or that holds something other than what was expected."""


def parse_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A weight dtype from a torch dtype or a name (float32 / fp32, float16 / fp16 / half, bfloat16 / bf16)."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and DTYPE_ALIASES.get(dtype.lower(), dtype.lower()) in DTYPES:
        return DTYPES[DTYPE_ALIASES.get(dtype.lower(), dtype.lower())]
    names = ", ".join([*DTYPES, *DTYPE_ALIASES])
    raise ValueError(f"dtype must be one of {names} or torch.{', torch.'.join(DTYPES)}, got {dtype!r}")


def read_state_dict(path: PathLike, device: Device = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a weight file as {key: tensor}; a clear WeightFileError for anything unreadable."""
    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"{path.name}: no such file")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return SafetensorsFile(path).read_all(device=device)
    if suffix in PICKLE_SUFFIXES:
        return _read_pickle(path, device)
    raise WeightFileError(f"{path.name}: unknown weight format {suffix!r}; expected one of "
                          f"{', '.join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)}")


class SafetensorsFile:
    """A .safetensors file's header, checked entry by entry, and its tensors read one at a time on request.

    `.shapes` {key: shape}, `.dtypes` {key: torch dtype as stored}, `.metadata` {text: text}; `.read(key, dtype,
    device)` reads one tensor into its own buffer (no memory map, nothing else held), so loading a network
    this way peaks at about the size of its weights.
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.name = self.path.name
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                raw = f.read(8)
                if len(raw) < 8:
                    self._fail(f"{size} bytes is too short for a .safetensors file")
                length = struct.unpack("<Q", raw)[0]
                if length > MAX_HEADER_BYTES:
                    self._fail(f"header of {length} bytes is over the {MAX_HEADER_BYTES}-byte limit")
                if length > size - 8:
                    self._fail(f"header of {length} bytes does not fit the {size}-byte file (truncated?)")
                text = f.read(length)
        except OSError as error:
            raise WeightFileError(f"{self.name}: cannot be read ({error.strerror or error})") from None
        try:
            header = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            self._fail(f"its header is not JSON ({error})")
        if not isinstance(header, dict):
            self._fail(f"its header is a JSON {_json_kind(header)}, expected an object of tensor entries")
        self.metadata = self._check_metadata(header.pop(METADATA_KEY, None))
        self.start, self.size = 8 + length, size
        self.entries = {key: self._check_entry(key, entry) for key, entry in header.items()}
        end = max((stop for _, _, (_, stop) in self.entries.values()), default=0)
        if self.start + end > size:
            self._fail(f"truncated: its header describes {self.start + end} bytes, the file has {size}")
        self.shapes = {key: shape for key, (_, shape, _) in self.entries.items()}
        self.dtypes = {key: dtype for key, (dtype, _, _) in self.entries.items()}

    def read(self, key: str, dtype: torch.dtype | None = None, device: Device = "cpu") -> torch.Tensor:
        """One tensor; floating-point ones in `dtype` (None: as stored), integer and bool ones as stored."""
        with open(self.path, "rb") as f:
            return self._read(f, key, dtype, device)

    def read_all(self, keys: Iterable[str] | None = None, dtype: torch.dtype | None = None,
                 device: Device = "cpu") -> dict[str, torch.Tensor]:
        """{key: tensor} of `keys` (default: every tensor), read in one pass over the open file."""
        with open(self.path, "rb") as f:
            return {key: self._read(f, key, dtype, device) for key in (self.entries if keys is None else keys)}

    def _read(self, f, key, dtype, device):
        stored, shape, (begin, end) = self.entries[key]
        buffer = torch.empty(end - begin, dtype=torch.uint8)
        f.seek(self.start + begin)
        if end > begin and f.readinto(buffer.numpy()) != end - begin:
            self._fail(f"truncated while reading {key!r}")
        tensor = buffer.view(stored).reshape(shape)
        if dtype is not None and tensor.is_floating_point():
            return tensor.to(device=device, dtype=dtype)
        return tensor.to(device=device)

    def _check_metadata(self, metadata):
        if metadata is None:
            return {}
        if not isinstance(metadata, dict):
            self._fail(f"its {METADATA_KEY} is a JSON {_json_kind(metadata)}, expected an object of text to text")
        for key, value in metadata.items():
            if not isinstance(value, str):
                self._fail(f"its {METADATA_KEY} entry {key!r} is a JSON {_json_kind(value)}, expected text "
                           "(metadata maps text to text)")
        return metadata

    def _check_entry(self, key, entry):
        """(torch dtype, shape, (begin, end)) of one header entry, after checking it against the format."""
        if not isinstance(entry, dict):
            self._fail(f"tensor {key!r}: its header entry is a JSON {_json_kind(entry)}, expected an object "
                       "with dtype, shape and data_offsets")
        missing = [field for field in ("dtype", "shape", "data_offsets") if field not in entry]
        if missing:
            self._fail(f"tensor {key!r}: its header entry has no {' and no '.join(missing)}")
        if entry["dtype"] not in SAFETENSORS_DTYPES:
            self._fail(f"tensor {key!r}: unknown dtype {entry['dtype']!r}; expected one of {', '.join(SAFETENSORS_DTYPES)}")
        shape, offsets = entry["shape"], entry["data_offsets"]
        if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
            self._fail(f"tensor {key!r}: shape {shape!r} is not a list of sizes")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(n) for n in offsets)
                and offsets[0] <= offsets[1]):
            self._fail(f"tensor {key!r}: data_offsets {offsets!r} out of range (expected [begin, end], 0 <= begin <= end)")
        dtype = SAFETENSORS_DTYPES[entry["dtype"]]
        needed = math.prod(shape) * dtype.itemsize
        if offsets[1] - offsets[0] != needed:
            self._fail(f"tensor {key!r}: data_offsets {offsets} span {offsets[1] - offsets[0]} bytes; "
                       f"{entry['dtype']} {shape} needs {needed}")
        return dtype, tuple(shape), tuple(offsets)

    def _fail(self, what):
        raise WeightFileError(f"{self.name}: not a readable .safetensors file: {what}") from None


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _json_kind(value):
    kinds = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return kinds.get(type(value), "null" if value is None else type(value).__name__)


def _read_pickle(path, device):
    try:
        data = torch.load(os.fspath(path), map_location=device, weights_only=True)
    except Exception as error:  # torch.load raises many kinds for a bad or unsafe file
        raise WeightFileError(f"{path.name}: not a readable checkpoint (only plain tensors are loaded): {error}") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightFileError(f"{path.name}: expected a dictionary of tensors, found {type(data).__name__}")
    return data
