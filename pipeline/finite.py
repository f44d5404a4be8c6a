"""Nothing silent: a network output of NaN or infinity is caught (at the first step and at the end) and explained by the
input that most likely caused it; the explanation is worked out only on failure, so the check costs one isfinite."""
import math
from collections.abc import Mapping

import torch

ABSURD = 1e4  # text embeddings and pooled vectors of real prompts stay within tens; a prompt weight of 1e30 does not


def check_cfg(cfg) -> float:
    """A guidance scale that is a finite number."""
    try:
        cfg = float(cfg)
    except (TypeError, ValueError):
        raise ValueError(f"cfg: expected a number, got {cfg!r}") from None
    if not math.isfinite(cfg):
        raise ValueError(f"cfg: expected a finite number, got {cfg}")
    return cfg


def check_sigma(sigma, name="sigma") -> float:
    """One noise level: a finite number, 0 or more."""
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"{name}: expected a finite noise level of 0 or more, got {sigma}")
    return sigma


def is_finite(*tensors) -> bool:
    """True when every tensor holds only finite numbers."""
    return all(bool(torch.isfinite(t).all()) for t in tensors if t is not None)


def check_text_encoding(encoder, source: str, *outputs: torch.Tensor) -> None:
    """A text encoding with NaN or infinite values is refused when the encoder's own weights are at fault, naming
    the file (a prompt weight that overflows is explained where the conditioning is checked)."""
    if is_finite(*outputs) or is_finite(*encoder.parameters(), *encoder.buffers()):
        return
    raise ValueError(f"text_encoder: the weights in {source} hold NaN or infinite values, so every prompt encodes to "
                     f"NaN; the file is damaged or was badly converted")


def explain_non_finite(denoiser, where: str, *, sigmas: torch.Tensor | None = None, latent: torch.Tensor | None = None,
                       conds: Mapping | None = None, cfg: float | None = None) -> str:
    """Why the denoised estimate is NaN or infinite `where`, naming the input that most likely caused it: a
    non-finite input, NaN weights in the network's file, a schedule that starts at noise level 0, a conditioning of
    absurd size (a prompt weight), an enormous cfg, float16 overflow; else what was seen."""
    conds = {name: cond for name, cond in (conds or {}).items() if cond is not None}
    network = getattr(denoiser, "network", None)
    if cfg is not None and not math.isfinite(cfg):
        return f"cfg: {cfg} is not a finite number"
    if sigmas is not None and not is_finite(sigmas):
        return "sigmas: hold NaN or infinite noise levels"
    if latent is not None and not is_finite(latent):
        return "latent: holds NaN or infinite values"
    for name, cond in conds.items():
        if not is_finite(*_parts(cond)):
            return f"{name}: the conditioning holds NaN or infinite values"
    if network is not None and not is_finite(*network.parameters(), *network.buffers()):
        source = getattr(network, "source_file", None)
        return (f"unet: the weights{f' in {source}' if source else ''} hold NaN or infinite values, so the network "
                f"can only output NaN; the file is damaged or was badly converted")
    if sigmas is not None and sigmas.numel() and float(sigmas[0]) <= 0:
        return (f"sigmas: the schedule starts at noise level {float(sigmas[0]):g} (a Set First Sigma of 0?): with no "
                f"noise to start from, a sampler's step from it is undefined and gives NaN; start from a positive "
                f"sigma")
    for name, cond in conds.items():
        largest = max((float(t.detach().abs().max()) for t in _parts(cond) if t is not None and t.numel()), default=0.0)
        if largest > ABSURD:
            return (f"{name}: the conditioning holds values up to {_magnitude(largest)}, far beyond a real prompt's "
                    f"(tens); a prompt weight such as (word:1e30)?")
    if cfg is not None and abs(cfg) > ABSURD:
        return f"cfg: {cfg:g} is so large that the guided estimate overflows; use a cfg of at most a few tens"
    dtypes = {p.dtype for p in network.parameters()} if network is not None else set()
    if torch.float16 in dtypes:
        return (f"unet: the network's output is NaN or infinite {where}: its float16 arithmetic overflowed; load it "
                f"with weight_dtype fp32 (or bf16)")
    seen = [f"first sigma {float(sigmas[0]):g}" if sigmas is not None and sigmas.numel() else None,
            f"cfg {cfg:g}" if cfg is not None else None]
    return (f"unet: the network's output (its estimate of the clean image) is NaN or infinite {where}, and none of "
            f"its inputs looks wrong ({', '.join(s for s in seen if s) or 'no schedule given'})")


def _parts(cond):
    """The tensors of a conditioning (text embedding and vector), whatever form it comes in."""
    if isinstance(cond, torch.Tensor):
        return [cond]
    return [t for t in (getattr(cond, "context", None), getattr(cond, "y", None)) if isinstance(t, torch.Tensor)]


def _magnitude(value: float) -> str:
    """1e+30 as 1e30: the size of a number at a glance."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"
