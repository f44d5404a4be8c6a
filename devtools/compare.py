"""How far a result is from its reference, as the tests and benchmarks of the networks measure it."""
import torch


def relative_error(result: torch.Tensor, reference: torch.Tensor) -> float:
    """The largest absolute difference relative to the reference's largest magnitude (in float32)."""
    result, reference = result.float(), reference.float()
    return ((result - reference).abs().max() / reference.abs().max()).item()
