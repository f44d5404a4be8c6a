"""A function captured once as a CUDA graph and replayed: one launch for its thousand kernels (CUDA graphs)."""
import torch

WARMUP_CALLS = 2  # compile, then let the allocator and the kernels settle before capture


def tensors(tree):
    """The tensors of nested lists and tuples, in order (None and other leaves skipped)."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, (list, tuple)):
        return [t for item in tree for t in tensors(item)]
    return []


def cloned(tree):
    """Nested lists and tuples with every tensor cloned (the static buffers a graph reads)."""
    if isinstance(tree, torch.Tensor):
        return tree.clone()
    if isinstance(tree, (list, tuple)):
        return type(tree)(cloned(item) for item in tree)
    return tree


class CapturedCall:
    """fn(weights, *run_inputs, *step_inputs) recorded as one CUDA graph on static copies of its inputs.

    Every call copies its step inputs (the noisy sample, the noise level) into the static buffers and replays; run
    inputs (text keys and values, guidance scale) are copied only when other objects are passed (a list of keys and
    values counts as the same while it is the same list). Weights are read where they were at capture: the owner keys
    a CapturedCall by their addresses. The result is a fresh tensor (the graph's own output is overwritten by the next
    replay).
    """

    def __init__(self, fn, weights, run_inputs, step_inputs):
        self.run_static, self.step_static = cloned(run_inputs), cloned(step_inputs)
        self.run_sources = tuple(run_inputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                fn(weights, *self.run_static, *self.step_static)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = fn(weights, *self.run_static, *self.step_static)

    def __call__(self, run_inputs, step_inputs):
        if any(a is not b for a, b in zip(run_inputs, self.run_sources)):
            for static, value in zip(tensors(self.run_static), tensors(run_inputs)):
                static.copy_(value)
            self.run_sources = tuple(run_inputs)
        for static, value in zip(tensors(self.step_static), tensors(step_inputs)):
            static.copy_(value)
        self.graph.replay()
        return self.output.clone()
