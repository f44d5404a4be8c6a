"""Content hashes: equal values hash equal, and any change in a value, dtype, shape or nesting is seen."""
import torch

from diffusion_blocks.pipeline.digest import fingerprint, value_fingerprint


class Adapter:
    """Stands for a ComfyUI weight adapter: an object holding tensors."""

    def __init__(self, weights):
        self.weights = weights


def nest(scale=1.0, strength=0.5, dtype=torch.float32):
    """ComfyUI's patches: weight name -> [(strength, value, strength of the model, offset, function)]."""
    weights = (torch.arange(6, dtype=dtype).reshape(2, 3) * scale, None, 4.0)
    return {"a.weight": [(strength, Adapter(weights), 1.0, None, None)],
            "b.bias": [(1.0, (torch.ones(2),), 1.0, None, torch.nn.functional.silu)]}


def test_equal_nests_hash_equal_and_every_change_is_seen():
    assert value_fingerprint(nest()) == value_fingerprint(nest())
    changed = [nest(scale=1.0001), nest(strength=0.6), nest(dtype=torch.float64), {**nest(), "c": None},
               {"a.weight": nest()["a.weight"]}]
    hashes = {value_fingerprint(value) for value in [nest(), *changed]}
    assert len(hashes) == 1 + len(changed)
    other_function = nest()
    other_function["b.bias"] = [(1.0, (torch.ones(2),), 1.0, None, torch.nn.functional.relu)]
    assert value_fingerprint(other_function) != value_fingerprint(nest())


def test_tensor_fingerprint_sees_dtype_and_shape():
    x = torch.zeros(4)
    assert fingerprint(x) == fingerprint(torch.zeros(4))
    assert len({fingerprint(x), fingerprint(x.double()), fingerprint(x.reshape(2, 2)), fingerprint(x + 1e-7)}) == 4
