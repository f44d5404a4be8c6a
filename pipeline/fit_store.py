"""Fitted schedules on disk: a JSON record keyed by a content hash of the network's weights and the fit's settings."""
import hashlib
import json
import weakref
from pathlib import Path

import torch

from ..schedules.validation import check_descending, check_sigmas
from .digest import add_tensor
from .fit_schedule import PAPER, FittedSchedule, sampler_label

FORMAT = "diffusion_blocks.fitted_schedules/1"
_HASHES = weakref.WeakKeyDictionary()  # module -> hash of its weights (a module's weights are hashed once)


def weights_hash(module: torch.nn.Module) -> str:
    """SHA-256 of a network's state dict (names, dtypes, shapes and bytes, in name order), memoized per module."""
    if module not in _HASHES:
        digest = hashlib.sha256()
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(f"{name}|".encode())
            add_tensor(digest, tensor)
        _HASHES[module] = digest.hexdigest()
    return _HASHES[module]


def settings_key(model_hash: str, settings: dict) -> str:
    """A short key for one fit: the weights' hash and every setting that changes the result."""
    text = json.dumps({"model": model_hash, **settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def record(model_hash: str, model_name: str, settings: dict, fits: list[FittedSchedule], **facts) -> dict:
    """The JSON record of fits of one model with one set of settings (facts: anything else worth keeping)."""
    return {"format": FORMAT, "paper": PAPER, "model_hash": model_hash, "model_name": model_name,
            "settings": settings, **facts,
            "fits": [{"sampler": f.sampler, **({"options": f.options} if f.options else {}), "budget": f.budget,
                      "steps": f.steps, "calls": f.calls, "teacher_rmse": f.error,
                      "sigmas": [float(s) for s in f.sigmas]} for f in fits]}


def save(path: Path, data: dict) -> Path:
    """Write a record (the folder is made when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def load(path: Path) -> dict:
    """A record read back and checked: its format, and every fit's sigmas descending and ending in 0."""
    name = Path(path).name
    if not Path(path).is_file():
        raise ValueError(f"fitted schedule {name!r} is gone; fit it again with Fit Schedule")
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"fitted schedule {name!r} is damaged (not JSON: {error}); delete it and fit again") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("fits"), list):
        raise ValueError(f"fitted schedule {name!r} is damaged: expected a {FORMAT} record with a list of fits")
    for k, fit in enumerate(data["fits"]):
        try:
            sigmas = check_descending(check_sigmas(fit["sigmas"], "sigmas"))
            if float(sigmas[-1]) != 0 or len(sigmas) < 2:
                raise ValueError("sigmas must end in 0 after at least one positive level")
            for field in ("sampler", "budget", "steps", "calls"):
                fit[field]
            if not isinstance(fit.get("options", {}), dict):
                raise ValueError("options must be a mapping of sampler options")
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"fitted schedule {name!r} is damaged: fit {k}: {error}") from None
    return data


def sigmas_of(data: dict, sampler: str | None = None, calls: int | None = None, options: dict | None = None
              ) -> torch.Tensor:
    """The sigmas of the record's fit for this sampler (with these options: none when not given) and budget (sampler
    None: its only or first fit)."""
    for fit in data["fits"]:
        if (sampler is None or (fit["sampler"], fit.get("options", {})) == (sampler, options or {})) \
                and (calls is None or fit["budget"] == calls):
            return torch.tensor(fit["sigmas"], dtype=torch.float32)
    have = ", ".join(f"{sampler_label(fit['sampler'], fit.get('options', {}))} at {fit['budget']} calls"
                     for fit in data["fits"])
    raise ValueError(f"no fit for {sampler_label(sampler, options or {})} at {calls} calls in this record; it has "
                     f"{have}")
