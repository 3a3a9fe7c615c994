"""Face detector interface and registry.

A detector maps a list of frames (``H x W x 3`` uint8 **BGR**, as OpenCV and
ffmpeg's ``bgr24`` deliver them) to one :class:`Detections` per frame, in source
pixels.  Implementations register a factory in :data:`DETECTORS`;
:func:`build_detector` builds one by name.  This module does not import torch.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["DETECTORS", "Detections", "FaceDetector", "build_detector"]


def _frozen(a: Any, tail: tuple[int, ...], name: str) -> np.ndarray:
    """A read-only float32 copy of ``a`` with shape ``(N, *tail)``."""
    arr = np.array(a, dtype=np.float32)
    if arr.size == 0:
        arr = arr.reshape((0, *tail))
    if arr.ndim != 1 + len(tail) or arr.shape[1:] != tail:
        raise ValueError(f"Detections.{name}: expected shape (N, {', '.join(map(str, tail))}), got {arr.shape}".replace(", )", ")"))
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Detections:
    """The faces found in one frame.

    ``boxes`` ``(N, 4)`` float32 ``x1, y1, x2, y2`` in source pixels; ``scores``
    ``(N,)`` float32 in [0, 1], sorted descending; ``landmarks`` ``(N, 5, 2)``
    float32 ``(x, y)`` of the two eyes, the nose tip and the two mouth corners,
    each pair image-left first (RetinaFace's order), in source pixels.  ``N`` may be 0.  The arrays are read-only
    copies.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "boxes", _frozen(self.boxes, (4,), "boxes"))
        object.__setattr__(self, "scores", _frozen(self.scores, (), "scores"))
        object.__setattr__(self, "landmarks", _frozen(self.landmarks, (5, 2), "landmarks"))
        if not (len(self.boxes) == len(self.scores) == len(self.landmarks)):
            raise ValueError(
                f"Detections: {len(self.boxes)} boxes, {len(self.scores)} scores, {len(self.landmarks)} landmark sets"
            )

    @classmethod
    def empty(cls) -> "Detections":
        """No faces."""
        return cls(np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, 5, 2)))

    def __len__(self) -> int:
        return int(self.scores.shape[0])


class FaceDetector(abc.ABC):
    """Finds faces in frames.

    :meth:`detect` takes frames ``H x W x 3`` uint8 BGR (sizes may differ) and
    returns one :class:`Detections` per frame, in order, in each frame's own
    pixel coordinates.  A frame without faces gives an empty Detections.
    """

    name: str = "detector"

    @abc.abstractmethod
    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Detect faces in every frame; ``len(result) == len(frames)``."""

    def describe(self) -> dict[str, Any]:
        """Settings worth recording next to results (name, weights, thresholds)."""
        return {"name": self.name}


def _retinaface(**kw: Any) -> FaceDetector:
    from .retinaface import RetinaFaceDetector  # imports torch: only when asked for

    return RetinaFaceDetector(**kw)


#: Detector factories by name.
DETECTORS: dict[str, Callable[..., FaceDetector]] = {
    "retinaface": _retinaface,
}


def build_detector(name: str, **kw: Any) -> FaceDetector:
    """Build the detector registered as ``name`` with keyword settings ``kw``."""
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown face detector {name!r}; known: {', '.join(sorted(DETECTORS))}") from None
    return factory(**kw)
