"""Face detector interface and registry.

A detector maps a list of frames (``H x W x 3`` uint8 **BGR**, as OpenCV and
ffmpeg's ``bgr24`` deliver them) to one :class:`Detections` per frame, in source
pixels.  Implementations register a builder in :data:`DETECTORS` under a model
family of the store (:mod:`lipsync.store`); :func:`build_detector` builds the
detector of a store entry by the entry's ``family`` (a checkpoint file given by
path is :data:`DEFAULT_FAMILY`'s).  This module does not import torch.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import store as model_store
from ..store import UnknownWeightsError

__all__ = [
    "DEFAULT_DETECTOR",
    "DEFAULT_FAMILY",
    "DETECTORS",
    "Detections",
    "FaceDetector",
    "UnknownDetectorError",
    "build_detector",
    "detector_family",
]

#: The detector family of a checkpoint given as a file path rather than a store entry.
DEFAULT_FAMILY = "retinaface"
#: The default face detector: the model store's default entry of :data:`DEFAULT_FAMILY`
#: (the default of ``options.face_weights`` and of the CLI's ``--weights`` / ``--face-weights``).
DEFAULT_DETECTOR: str = model_store.DEFAULTS[DEFAULT_FAMILY]


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


#: Detector builders by model-store family.  A builder takes ``weights`` (an entry name or a
#: checkpoint path), ``store``, ``device`` and the detector's own settings, all as keywords.
DETECTORS: dict[str, Callable[..., FaceDetector]] = {
    "retinaface": _retinaface,
}


class UnknownDetectorError(UnknownWeightsError, ValueError):
    """Weights that name no face detector: neither a store entry nor a file, or an entry of a family without a builder."""


def _known() -> str:
    return ", ".join(sorted(DETECTORS))


def detector_family(weights: str | os.PathLike[str]) -> str:
    """The detector family of ``weights``: a model-store entry's ``family``; a checkpoint file's :data:`DEFAULT_FAMILY`."""
    text = os.fspath(weights)
    entry = model_store.REGISTRY.get(text)
    if entry is not None:
        return entry.family
    if Path(text).expanduser().is_file():
        return DEFAULT_FAMILY
    raise UnknownDetectorError(
        f"{text!r} is neither a known model ({', '.join(sorted(model_store.REGISTRY))}) nor an existing file; "
        f"face detectors known: {_known()}"
    )


def build_detector(
    weights: str | os.PathLike[str] | None = None,
    /,
    device: str | None = None,
    store: str | os.PathLike[str] | None = None,
    **settings: Any,
) -> FaceDetector:
    """Build the face detector of ``weights`` (default :data:`DEFAULT_DETECTOR`).

    ``weights`` is a model-store entry, whose ``family`` picks the builder in
    :data:`DETECTORS`, or a path to a checkpoint file (:data:`DEFAULT_FAMILY`).  The
    builder gets ``weights``, ``device`` and ``store`` (those two when given) and
    ``settings`` (``batch_size``, ``max_size``, thresholds...).  An entry of a family
    without a builder, or weights that are neither an entry nor a file, raise
    :class:`UnknownDetectorError` naming them and the known families.

    The older form ``build_detector(family, weights=..., **settings)`` names the
    family itself (any weights argument may then be omitted: the builder's default).
    """
    if weights is None:
        weights = settings.pop("weights", DEFAULT_DETECTOR)
    text = os.fspath(weights)
    if "weights" in settings or (text not in model_store.REGISTRY and text in DETECTORS):
        try:  # the older form: the family named, the weights (if any) among the settings
            builder = DETECTORS[text]
        except KeyError:
            raise UnknownDetectorError(f"unknown face detector {text!r}; known: {_known()}") from None
    else:
        family = detector_family(text)
        try:
            builder = DETECTORS[family]
        except KeyError:
            raise UnknownDetectorError(
                f"face detector weights {text!r}: model-store entry of family {family!r}, which has no face detector; "
                f"known families: {_known()}"
            ) from None
        settings["weights"] = weights
    if device is not None:
        settings["device"] = device
    if store is not None:
        settings["store"] = store
    return builder(**settings)
