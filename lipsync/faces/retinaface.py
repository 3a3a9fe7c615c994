"""RetinaFace face detector: batching, priors, decoding, NMS.

:class:`RetinaFaceDetector` runs :mod:`lipsync.models.retinaface` on batches of
frames.  Frames of one size are resized together (longer side at most
``max_size``) and stacked into one batch, so every frame of a film goes through
the same input size; priors are built from the weights entry's anchor meta
(``min_sizes``, ``steps``, ``variance``, ``clip``) once per input size.  Boxes and
landmarks come back in each frame's own source pixels.

Post-processing per frame, as in the reference implementations: softmax face
score > ``score_threshold``; the ``top_k`` best; greedy NMS at IoU
``nms_threshold``; at most ``keep_top_k`` faces, best first.  Boxes are not
clipped to the frame (a face at the edge may extend past it by a few pixels).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import torch

from lipsync import store as model_store
from lipsync.models.retinaface import RetinaFace, RetinaFaceConfig, load_retinaface

from .detect import Detections, FaceDetector

__all__ = [
    "DetectorOutOfMemoryError",
    "RetinaFaceDetector",
    "decode_boxes",
    "decode_landmarks",
    "nms",
    "prior_boxes",
]


class DetectorOutOfMemoryError(RuntimeError):
    """The accelerator ran out of memory on a batch; the message says which setting to lower."""


# --------------------------------------------------------------------------- priors and decoding


def prior_boxes(
    image_size: tuple[int, int],
    min_sizes: Sequence[Sequence[float]],
    steps: Sequence[int],
    clip: bool = False,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Anchor boxes ``(P, 4)`` as normalised ``(cx, cy, w, h)`` for an input of ``image_size = (H, W)``.

    Level ``k`` has a ``ceil(H / steps[k]) x ceil(W / steps[k])`` grid with one
    anchor per ``min_sizes[k]`` at every cell centre; order is level, row,
    column, anchor -- the order of the network's flattened head outputs.
    """
    h, w = image_size
    levels = []
    for sizes, step in zip(min_sizes, steps):
        fh, fw = math.ceil(h / step), math.ceil(w / step)
        cy = (torch.arange(fh, dtype=torch.float64) + 0.5) * step / h
        cx = (torch.arange(fw, dtype=torch.float64) + 0.5) * step / w
        gy, gx = torch.meshgrid(cy, cx, indexing="ij")  # (fh, fw)
        s = torch.as_tensor(sizes, dtype=torch.float64)  # (A,)
        a = len(sizes)
        level = torch.stack(
            [
                gx[..., None].expand(fh, fw, a),
                gy[..., None].expand(fh, fw, a),
                (s / w).expand(fh, fw, a),
                (s / h).expand(fh, fw, a),
            ],
            dim=-1,
        )
        levels.append(level.reshape(-1, 4))
    priors = torch.cat(levels).float()
    if clip:
        priors.clamp_(0.0, 1.0)
    return priors.to(device)


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor, variance: Sequence[float]) -> torch.Tensor:
    """Box offsets ``(..., P, 4)`` -> normalised ``x1, y1, x2, y2`` ``(..., P, 4)``."""
    centre = priors[:, :2] + loc[..., :2] * variance[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[..., 2:] * variance[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def decode_landmarks(landms: torch.Tensor, priors: torch.Tensor, variance: Sequence[float]) -> torch.Tensor:
    """Landmark offsets ``(..., P, 10)`` -> normalised points ``(..., P, 5, 2)``."""
    offsets = landms.reshape(*landms.shape[:-1], 5, 2)
    return priors[:, None, :2] + offsets * variance[0] * priors[:, None, 2:]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, best score first.

    A box is dropped when its IoU with an already kept, higher-scoring box is
    greater than ``iou_threshold``.  Boxes are ``x1, y1, x2, y2`` (continuous
    coordinates, area ``(x2 - x1) * (y2 - y1)``).
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    b = np.asarray(boxes, dtype=np.float64)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        union = area[i] + area[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


# --------------------------------------------------------------------------- detector


def _input_size(height: int, width: int, max_size: int | None) -> tuple[int, int]:
    """Network input ``(h, w)`` for a ``height x width`` frame: longer side <= max_size, aspect kept."""
    longest = max(height, width)
    if max_size is None or longest <= max_size:
        return height, width
    scale = max_size / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


class RetinaFaceDetector(FaceDetector):
    """RetinaFace on batches of BGR frames.

    * ``weights``: a model-store entry name (verified via
      :func:`lipsync.store.resolve` in ``store``) or a checkpoint path; a path uses
      the meta of ``entry`` if given, else of the entry with the same file name,
      else of the default RetinaFace entry.
    * ``device``: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    * ``batch_size``: frames per forward pass; on CUDA out-of-memory a
      :class:`DetectorOutOfMemoryError` says to lower it.
    * ``max_size``: frames whose longer side exceeds it are downscaled to it
      (aspect kept) before the network; None runs at source resolution.
      Outputs are always in source pixels.
    * ``score_threshold``, ``nms_threshold``, ``top_k`` (candidates before NMS),
      ``keep_top_k`` (faces kept per frame).
    """

    name = "retinaface"

    def __init__(
        self,
        weights: str | os.PathLike[str] = "retinaface_mobilenet0.25",
        store: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        max_size: int | None = 640,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.4,
        top_k: int = 5000,
        keep_top_k: int = 750,
        entry: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"RetinaFaceDetector: batch_size={batch_size} must be >= 1")
        if max_size is not None and max_size < 32:
            raise ValueError(f"RetinaFaceDetector: max_size={max_size} must be >= 32 (or None for no downscaling)")
        for label, value in (("score_threshold", score_threshold), ("nms_threshold", nms_threshold)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"RetinaFaceDetector: {label}={value} must be within [0, 1]")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"RetinaFaceDetector: device={device!r} but CUDA is not available here; use device='cpu'")
        self.entry = model_store.get_entry(entry) if entry else model_store.entry_for(weights, "retinaface")
        if self.entry.family != "retinaface":
            raise ValueError(f"RetinaFaceDetector: weights entry {self.entry.name!r} is a {self.entry.family} model")
        self.weights_path = model_store.resolve(weights, store)
        self.meta: Mapping[str, Any] = self.entry.meta
        self.batch_size = int(batch_size)
        self.max_size = None if max_size is None else int(max_size)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        self.keep_top_k = int(keep_top_k)
        self.model: RetinaFace = load_retinaface(self.weights_path, RetinaFaceConfig.from_meta(self.meta)).to(self.device)
        self._rgb = str(self.meta["color_order"]).upper() == "RGB"
        self._mean = torch.tensor(self.meta["mean"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._inv_std = 1.0 / torch.tensor(self.meta["std"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._variance = tuple(float(v) for v in self.meta["variance"])
        self._priors: dict[tuple[int, int], torch.Tensor] = {}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weights": self.entry.name,
            "weights_file": os.path.basename(self.weights_path),  # the store entry names it; no local path
            "device": str(self.device),
            "batch_size": self.batch_size,
            "max_size": self.max_size,
            "score_threshold": self.score_threshold,
            "nms_threshold": self.nms_threshold,
            "top_k": self.top_k,
            "keep_top_k": self.keep_top_k,
        }

    def priors(self, size: tuple[int, int]) -> torch.Tensor:
        """Priors for network input ``size = (h, w)``, built once per size."""
        if size not in self._priors:
            self._priors[size] = prior_boxes(
                size, self.meta["min_sizes"], self.meta["steps"], bool(self.meta["clip"]), self.device
            )
        return self._priors[size]

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """One :class:`Detections` per frame (``H x W x 3`` uint8 BGR), in source pixels."""
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, frame in enumerate(frames):
            if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                desc = f"{type(frame).__name__} {getattr(frame, 'shape', '')} {getattr(frame, 'dtype', '')}".strip()
                raise ValueError(f"RetinaFaceDetector.detect: frame {i} is {desc}; expected an H x W x 3 uint8 BGR array")
            groups[frame.shape[:2]].append(i)
        out: list[Detections | None] = [None] * len(frames)
        for (height, width), indices in groups.items():
            size = _input_size(height, width, self.max_size)
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                for i, det in zip(chunk, self._detect_batch([frames[i] for i in chunk], (height, width), size)):
                    out[i] = det
        return [d for d in out if d is not None]

    def _detect_batch(
        self, frames: list[np.ndarray], source: tuple[int, int], size: tuple[int, int]
    ) -> list[Detections]:
        height, width = source
        h, w = size
        if (h, w) != (height, width):
            frames = [cv2.resize(np.ascontiguousarray(f), (w, h), interpolation=cv2.INTER_LINEAR) for f in frames]
        batch = np.stack(frames)
        try:
            with torch.inference_mode():
                x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float()
                if self._rgb:
                    x = x.flip(1)
                x = (x - self._mean) * self._inv_std
                loc, conf, landms = self.model(x)
                priors = self.priors((h, w))
                scores = conf.softmax(dim=-1)[..., 1]
                boxes = decode_boxes(loc, priors, self._variance)
                points = decode_landmarks(landms, priors, self._variance)
                # normalised coordinates times the *source* size are source pixels
                scale = torch.tensor([width, height], dtype=torch.float32, device=self.device)
                boxes = boxes * scale.repeat(2)
                points = points * scale
                results = [self._select(boxes[b], scores[b], points[b]) for b in range(len(frames))]
        except torch.OutOfMemoryError as exc:
            raise DetectorOutOfMemoryError(
                f"RetinaFace ran out of {self.device} memory on a batch of {len(frames)} frames of {w}x{h} "
                f"(batch_size={self.batch_size}, max_size={self.max_size}); lower batch_size "
                f"(e.g. batch_size={max(1, self.batch_size // 2)}) or max_size, or free GPU memory"
            ) from exc
        return results

    def _select(self, boxes: torch.Tensor, scores: torch.Tensor, points: torch.Tensor) -> Detections:
        keep = torch.nonzero(scores > self.score_threshold).squeeze(1)
        if keep.numel() == 0:
            return Detections.empty()
        if keep.numel() > self.top_k:
            keep = keep[scores[keep].topk(self.top_k).indices]
        b = boxes[keep].cpu().numpy()
        s = scores[keep].cpu().numpy()
        p = points[keep].cpu().numpy()
        kept = nms(b, s, self.nms_threshold)[: self.keep_top_k]
        return Detections(b[kept], s[kept], p[kept])
