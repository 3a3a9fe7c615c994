"""The one place that turns a device option ("auto", "cpu", "cuda", "cuda:N", "mps") into a device name.

Every stage that takes a ``--device`` / ``*_device`` option resolves it here, so
"auto" means the same thing everywhere: CUDA when torch sees a GPU, else the CPU.
"""

from __future__ import annotations

import re

__all__ = ["ACCEPTED", "resolve_device"]

#: The forms :func:`resolve_device` accepts, as named in its error message.
ACCEPTED = '"auto", "cpu", "cuda", "cuda:N" or "mps"'

_EXPLICIT = re.compile(r"(cpu|cuda|cuda:\d+|mps)")


def resolve_device(device: str | None = "auto") -> str:
    """``"auto"`` or None: ``"cuda"`` when torch sees a GPU, else ``"cpu"``; any accepted name as given.

    Accepted: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (N a whole number), ``"mps"``;
    anything else raises ``ValueError`` naming the value and these forms.
    Whether the named device exists is left to the code that uses it.
    """
    if device is None or device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(device, str) or not _EXPLICIT.fullmatch(device):
        raise ValueError(f"device {device!r} is not one of {ACCEPTED}")
    return device
