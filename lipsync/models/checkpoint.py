"""Reading published checkpoints: one place for the checks every loader makes.

:func:`read_state_dict` opens a file with ``torch.load(weights_only=True)``,
unwraps ``{"state_dict": ...}`` and insists on a non-empty mapping of tensors;
:func:`load_exact` loads it strictly into a model whose BatchNorm
``num_batches_tracked`` counters may be missing from old files.  Errors name the
file and are raised as the caller's own exception class.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from torch import nn

OPTIONAL_SUFFIX = ".num_batches_tracked"


def read_state_dict(path: str | os.PathLike[str], kind: str, error: type[Exception]) -> tuple[str, Mapping[Any, torch.Tensor]]:
    """``(path as str, state dict)`` of a checkpoint file of ``kind`` (e.g. "SyncNet"); keys as stored."""
    where = os.fspath(path)
    if not os.path.isfile(where):
        raise FileNotFoundError(f"{where}: no such {kind} checkpoint file")
    try:
        obj: Any = torch.load(where, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors alike
        raise error(
            f"{where}: not a {kind} checkpoint: torch.load could not read it as a (weights-only) torch file "
            f"({exc.__class__.__name__}: {str(exc)[:300]})"
        ) from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise error(f"{where}: not a {kind} checkpoint: expected a state dict of tensors, found {type(obj).__name__}")
    return where, obj


def load_exact(model: nn.Module, sd: dict[str, torch.Tensor], where: str, kind: str, layout: str,
               error: type[Exception], note: str = "") -> nn.Module:
    """Load ``sd`` into ``model`` strictly: same keys (``num_batches_tracked`` may be absent) and shapes.

    ``layout`` names the expected file in the message (e.g. "SyncNet (syncnet_python
    syncnet_v2)"); ``note`` is appended to the missing / unexpected keys message.
    """
    own = model.state_dict()
    missing = sorted(k for k in own if k not in sd and not k.endswith(OPTIONAL_SUFFIX))
    unexpected = sorted(k for k in sd if k not in own)
    if missing or unexpected:
        raise error(f"{where}: not a {layout} state dict: {len(missing)} missing keys {missing[:8]}, "
                    f"{len(unexpected)} unexpected keys {unexpected[:8]}{note}")
    wrong = [f"{k} {tuple(sd[k].shape)} (expected {tuple(v.shape)})" for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    if wrong:
        raise error(f"{where}: {kind} keys match but {len(wrong)} tensor shapes do not: {wrong[:5]}")
    full = dict(sd)
    for k, v in own.items():
        if k not in full:  # only num_batches_tracked can be absent here
            full[k] = v.clone()
    model.load_state_dict(full, strict=True)
    return model
