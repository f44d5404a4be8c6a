"""Which exact fused attention kernel to use on a GPU: FlashAttention-2, cuDNN or memory-efficient, whichever is
fastest."""
import contextlib

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# Exact kernels only (no approximation): FlashAttention-2 (Dao 2023), cuDNN's fused attention, xformers-style
# memory-efficient attention (Rabe & Staats 2021). The unfused math kernel is the fallback torch keeps.
EXACT_BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                  "efficient": SDPBackend.EFFICIENT_ATTENTION}
TIMED_CALLS = 10


def time_backends(device, dtype, batch, heads, tokens, head_dim):
    """Milliseconds per call of every exact SDPA kernel that runs these shapes on this GPU (the ones that refuse are
    left out)."""
    q, k, v = (torch.randn(batch, heads, tokens, head_dim, device=device, dtype=dtype) for _ in range(3))
    timings = {}
    for name, backend in EXACT_BACKENDS.items():
        try:
            with sdpa_kernel([backend]):
                F.scaled_dot_product_attention(q, k, v)  # warm-up; raises when the kernel cannot take these inputs
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(TIMED_CALLS):
                    F.scaled_dot_product_attention(q, k, v)
                end.record()
            torch.cuda.synchronize(device)
            timings[name] = start.elapsed_time(end) / TIMED_CALLS
        except RuntimeError:
            continue
    return timings


def choose_backend(device, dtype, batch, heads, tokens, head_dim):
    """(name, timings): the fastest exact kernel for the network's largest self-attention, timed on this GPU once;
    ("default", {}) off CUDA, where torch picks its own kernel."""
    if torch.device(device).type != "cuda":
        return "default", {}
    timings = time_backends(device, dtype, batch, heads, tokens, head_dim)
    return (min(timings, key=timings.get) if timings else "default"), timings


def attention_kernel(name):
    """A context in which scaled_dot_product_attention uses only the named kernel (or torch's choice for 'default')."""
    return sdpa_kernel([EXACT_BACKENDS[name]]) if name in EXACT_BACKENDS else contextlib.nullcontext()
