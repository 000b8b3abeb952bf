"""The one reader of training checkpoints: `iqs train`'s Lightning `.ckpt` -> (state_dict, `iqs_meta`) -> model.

Every checkpoint is opened with `torch.load(..., weights_only=True)`: tensors, numbers, strings and plain
containers only, so opening a file can never run code hidden in a pickle. Our own checkpoints need no
exception to that rule, so no safe globals are registered (`torch.serialization.add_safe_globals`):
`QualityLitModule` never calls `save_hyperparameters` (the optimizer factories it receives are partials,
and Lightning would pickle them, with any OmegaConf config, into `hyper_parameters`); what rebuilds the
model is the `iqs_meta` record, a plain dict of JSON-safe values. Everything else Lightning writes
(optimizer and scheduler states, callback and loop states) is tensors and plain containers. A checkpoint
holding any other object is refused with a `CheckpointError` that names the file and what to do.

Export, predict, the tracking artifacts and the tests all read checkpoints here.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from iqs.models import QualityModel

META_KEY = "iqs_meta"
# the attribute of QualityLitModule that holds the model: Lightning prefixes its state_dict keys with it
MODEL_PREFIX = "model."


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the next step."""


def load_weights_only(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's top-level dict, loaded with `weights_only=True`; anything unsafe is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        import torch  # here: reading a record's traits (has_dist, for the model card) needs no torch

        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch names the offending global, e.g. "Unsupported global: GLOBAL omegaconf.dictconfig.DictConfig"
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"a pickled `{found[1]}`" if found else "pickled Python objects"
        raise CheckpointError(
            f"{path}: refused to load: it holds {what}, not only tensors and plain containers, and "
            "unpickling it could run code. iqs loads the checkpoints `iqs train` writes; retrain, or, only if "
            "you trust the file, re-save its weights and record as plain values: "
            "torch.save({'state_dict': ..., 'iqs_meta': <plain dict>}, path)"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, found {type(ckpt).__name__}")
    return ckpt


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model state_dict without Lightning's `model.` prefix, `iqs_meta`) of an `iqs train` checkpoint."""
    ckpt = load_weights_only(path)
    meta = ckpt.get(META_KEY)
    if not isinstance(meta, Mapping) or not meta:
        raise CheckpointError(
            f"{path}: no '{META_KEY}' record; export and predict need the metadata `iqs train` saves "
            "with every checkpoint (input size, mean/std, head, thresholds)"
        )
    state = ckpt.get("state_dict")
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: no 'state_dict' in the checkpoint")
    if any(k.startswith(MODEL_PREFIX) for k in state):
        state = {k[len(MODEL_PREFIX) :]: v for k, v in state.items() if k.startswith(MODEL_PREFIX)}
    return dict(state), dict(meta)


def read_meta(path: str | Path) -> dict[str, Any]:
    """Just the `iqs_meta` record (for model cards and the like)."""
    return read_checkpoint(path)[1]


def load_checkpoint(path: str | Path) -> tuple[QualityModel, dict[str, Any]]:
    """(the trained QualityModel in eval mode, the checkpoint's own `iqs_meta` record).

    The record rebuilds the architecture without loading the backbone's weight source (the checkpoint
    carries every weight); the state_dict must then match it key for key.
    """
    from iqs.models import build_quality_model

    state, meta = read_checkpoint(path)
    model = build_quality_model(meta)
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: state_dict does not match the model its '{META_KEY}' describes "
            f"(missing e.g. {sorted(missing)[:3]}, unexpected e.g. {sorted(unexpected)[:3]})"
        )
    model.load_state_dict(state, strict=True)
    return model.eval(), meta


def has_dist(meta: dict) -> bool:
    # records written before the trait existed name the head instead
    return bool(meta.get("has_dist", str(meta.get("head", "")) == "distribution"))
