"""Weight files: safetensors and plain-tensor checkpoints load; anything else fails with a clear message."""
import pytest
import torch
from safetensors.torch import save_file

from diffusion_blocks.networks.weights import WeightFileError, read_state_dict, strip_prefix

TENSORS = {"model.diffusion_model.a": torch.arange(6.0).reshape(2, 3), "other.b": torch.ones(2)}


def test_safetensors_and_checkpoints_give_the_same_tensors(tmp_path):
    save_file(TENSORS, tmp_path / "w.safetensors")
    torch.save({"state_dict": TENSORS, "global_step": 7}, tmp_path / "w.ckpt")
    for name in ("w.safetensors", "w.ckpt"):
        loaded = read_state_dict(tmp_path / name)
        assert loaded.keys() == TENSORS.keys()
        assert all(torch.equal(loaded[k], TENSORS[k]) for k in TENSORS)
    assert list(strip_prefix(TENSORS, "model.diffusion_model.")) == ["a"]


def test_truncated_safetensors_is_named(tmp_path):
    save_file(TENSORS, tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightFileError, match="cut.safetensors.*truncated"):
        read_state_dict(tmp_path / "cut.safetensors")


def test_pickled_code_is_refused(tmp_path):
    torch.save({"weights": TENSORS, "callable": print}, tmp_path / "evil.ckpt")
    with pytest.raises(WeightFileError, match="evil.ckpt"):
        read_state_dict(tmp_path / "evil.ckpt")


@pytest.mark.parametrize("name, message", [("missing.safetensors", "no such file"), ("w.onnx", "unknown weight format")])
def test_missing_or_unknown_files_are_named(tmp_path, name, message):
    (tmp_path / "w.onnx").write_bytes(b"\0" * 16)
    with pytest.raises(WeightFileError, match=message):
        read_state_dict(tmp_path / name)
