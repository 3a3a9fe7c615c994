"""Face tracking within one shot: per-frame detections in, :class:`FaceTrack` records out.

One call of :func:`track_shot` (or one :class:`ShotTracker`) per shot, so a track
never crosses a cut.  The tracker is streaming: it consumes one frame's
detections at a time and holds only the active tracks' state plus the
observations of the tracks found so far -- never an image.

Per frame:

1. every active track predicts its box with a constant-velocity Kalman filter on
   the box centre and size (``cx, cy, w, h``);
2. detections are assigned to tracks by the Hungarian algorithm
   (:func:`scipy.optimize.linear_sum_assignment`) on the cost
   ``(1 - IoU(prediction, detection)) + motion_weight * distance``, where
   ``distance`` is the centre offset in units of the predicted face height;
   pairs are forbidden (the gate) when the centre lies outside ``gate_sigma``
   standard deviations of the prediction (the filter's own uncertainty, which is
   small for a steady track and grows while it coasts), clamped to
   ``[min_gate, max_center_distance]`` face heights, or when the height ratio to
   both the prediction and the last detection exceeds ``max_size_ratio``;
3. a track that is re-detected after missing up to ``max_gap`` frames gets the
   missing frames filled by linear interpolation of box, landmarks and score
   between the two detections, marked ``source="interpolated"``; a track missing
   for more than ``max_gap`` frames ends at its last detection (never extrapolated);
4. a detection no track takes starts a new track, which must be detected in
   ``min_hits`` consecutive frames to be confirmed (its first frame is the first
   detection, not the confirmation).

When the shot ends, tracks shorter than ``min_track_frames`` or whose median
box height is below ``min_face_size`` are dropped and listed in
:attr:`TrackingResult.dropped` with the reason.  Kept tracks are numbered
``"{shot_id}/face-{k:02d}"`` from 1, ordered by first frame then by the x of their
first box centre; dropped ones ``"{shot_id}/dropped-{k:02d}"`` the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment

from dubcore.records import FaceObservation, FaceTrack
from dubcore.timebase import FrameRange

from .detect import Detections
from .quality import TrackQuality

__all__ = [
    "Detections",
    "DroppedTrack",
    "ShotTracker",
    "TrackerParams",
    "TrackingResult",
    "box_iou",
    "track_shot",
]


@dataclass(frozen=True)
class TrackerParams:
    """Parameters of the tracker (all frames are frames of the shot's video).

    * ``max_gap`` (10): missed frames a track survives; filled by interpolation.
    * ``min_hits`` (1): consecutive detections that confirm a new track; an
      unconfirmed track ends at its first miss.  1 (the default) confirms at
      once, so a face missed in its second frame is not cut; spurious one-frame
      detections are then dropped as too short instead.
    * ``min_track_frames`` (8): shorter tracks (first to last detection) are dropped.
    * ``min_face_size`` (32.0 px): tracks whose median detected box height is
      smaller are dropped (too small to lip-sync).
    * ``min_score`` (0.0): detections scoring lower are ignored.
    * ``motion_weight`` (0.5): weight of the centre distance against ``1 - IoU``.
    * ``gate_sigma`` (4.0): centre gate in standard deviations of the prediction.
    * ``min_gate`` (0.3), ``max_center_distance`` (1.0): bounds of the centre
      gate, in predicted face heights.  A tight gate keeps two faces side by side
      from swapping when one is missed; the floor lets fast moves through.
    * ``max_size_ratio`` (1.5): gate on detected/predicted height (either way).
    * ``measurement_std`` (0.05): detector noise, fraction of face height.
    * ``accel_std`` (0.05): acceleration noise of the centre per frame squared,
      fraction of face height.
    * ``size_accel_std`` (0.004): the same for the box size, which changes slowly
      (a low value keeps size noise from becoming a size velocity).
    * ``init_velocity_std`` (0.25): prior on a new track's speed, face heights per frame.
    """

    max_gap: int = 10
    min_hits: int = 1
    min_track_frames: int = 8
    min_face_size: float = 32.0
    min_score: float = 0.0
    motion_weight: float = 0.5
    gate_sigma: float = 4.0
    min_gate: float = 0.3
    max_center_distance: float = 1.0
    max_size_ratio: float = 1.5
    measurement_std: float = 0.05
    accel_std: float = 0.05
    size_accel_std: float = 0.004
    init_velocity_std: float = 0.25

    def __post_init__(self) -> None:
        if self.max_gap < 0:
            raise ValueError(f"max_gap must be >= 0, got {self.max_gap}")
        if self.min_hits < 1:
            raise ValueError(f"min_hits must be >= 1, got {self.min_hits}")
        if self.min_track_frames < 1:
            raise ValueError(f"min_track_frames must be >= 1, got {self.min_track_frames}")
        if self.min_face_size < 0:
            raise ValueError(f"min_face_size must be >= 0, got {self.min_face_size}")
        if not (0 < self.min_gate <= self.max_center_distance and self.gate_sigma > 0 and self.max_size_ratio >= 1):
            raise ValueError("need 0 < min_gate <= max_center_distance, gate_sigma > 0 and max_size_ratio >= 1")
        if min(self.measurement_std, self.accel_std, self.size_accel_std, self.init_velocity_std) <= 0:
            raise ValueError("measurement_std, accel_std, size_accel_std and init_velocity_std must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DroppedTrack:
    """A track the tracker found but did not keep, and why."""

    track: FaceTrack
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Summary for faces.json (no per-frame data)."""
        detected = [o for o in self.track.observations if o.source == "detected"]
        heights = [o.box[3] - o.box[1] for o in detected] or [0.0]
        return {
            "id": self.track.id,
            "shot_id": self.track.shot_id,
            "frames": self.track.frames.to_list(),
            "detections": len(detected),
            "median_box_height": round(float(np.median(heights)), 2),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class TrackingResult:
    """Tracks of one shot.  ``frames`` is the range of frames consumed.

    ``quality`` maps track ids of ``tracks`` to their :class:`TrackQuality`
    (:func:`lipsync.faces.quality.assess_tracks`); a track without an entry is
    castable.  Weak tracks stay in ``tracks``: ``dropped`` holds only the
    tracker's own drops (too short, too small, unconfirmed).
    """

    shot_id: str
    frames: FrameRange
    tracks: tuple[FaceTrack, ...]
    dropped: tuple[DroppedTrack, ...]
    skipped_detections: int = 0  # rows ignored: non-finite, empty box, or score < min_score
    quality: Mapping[str, TrackQuality] = field(default_factory=dict)

    def dropped_dicts(self) -> list[dict[str, Any]]:
        return [d.to_dict() for d in self.dropped]

    def castable(self, track_id: str) -> bool:
        """Whether casting may drive ``track_id`` unasked (no quality verdict means castable)."""
        q = self.quality.get(track_id)
        return True if q is None else bool(q.castable)


# --------------------------------------------------------------------------- geometry


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` ``(M, 4)`` with every box of ``b`` ``(N, 4)``: ``(M, N)``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _to_cwh(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]])


def _from_cwh(s: np.ndarray) -> np.ndarray:
    w, h = max(s[2], 1.0), max(s[3], 1.0)
    return np.array([s[0] - w / 2, s[1] - h / 2, s[0] + w / 2, s[1] + h / 2])


# --------------------------------------------------------------------------- one track


class _Track:
    """Mutable state of one track while the shot is being consumed (private)."""

    def __init__(self, serial: int, frame: int, box: np.ndarray, lms: np.ndarray | None, score: float, p: TrackerParams):
        self.serial = serial  # creation order: a stable tie-break
        self.params = p
        z = _to_cwh(box)
        h = max(z[3], 1.0)
        # Constant-velocity Kalman filter per dimension (cx, cy, w, h): x = (pos, vel).
        self.x = np.stack([z, np.zeros(4)], axis=1)
        r = (p.measurement_std * h) ** 2
        self.P = np.zeros((4, 2, 2))
        self.P[:, 0, 0] = r
        self.P[:, 1, 1] = (p.init_velocity_std * h) ** 2
        self.observations: list[FaceObservation] = [_observation(frame, box, lms, score, "detected")]
        self.hits = 1  # consecutive detections
        self.confirmed = p.min_hits <= 1
        self.misses = 0

    @property
    def last_frame(self) -> int:
        return self.observations[-1].frame

    def predict(self) -> None:
        h = max(self.x[3, 0], 1.0)
        p = self.params
        q = (np.array([p.accel_std, p.accel_std, p.size_accel_std, p.size_accel_std]) * h) ** 2
        self.x[:, 0] += self.x[:, 1]
        P = self.P
        a, b, c = P[:, 0, 0].copy(), P[:, 0, 1].copy(), P[:, 1, 1].copy()
        P[:, 0, 0] = a + 2 * b + c + q / 4
        P[:, 0, 1] = P[:, 1, 0] = b + c + q / 2
        P[:, 1, 1] = c + q

    def position_variance(self) -> float:
        """Variance of the predicted centre, per axis (mean of x and y), px^2."""
        return float((self.P[0, 0, 0] + self.P[1, 0, 0]) / 2)

    def predicted_box(self) -> np.ndarray:
        return _from_cwh(self.x[:, 0])

    def update(self, frame: int, box: np.ndarray, lms: np.ndarray | None, score: float) -> None:
        z = _to_cwh(box)
        r = (self.params.measurement_std * max(z[3], 1.0)) ** 2
        P = self.P
        s = P[:, 0, 0] + r
        k0, k1 = P[:, 0, 0] / s, P[:, 1, 0] / s
        y = z - self.x[:, 0]
        self.x[:, 0] += k0 * y
        self.x[:, 1] += k1 * y
        a, b, c = P[:, 0, 0].copy(), P[:, 0, 1].copy(), P[:, 1, 1].copy()
        P[:, 0, 0] = a - k0 * a
        P[:, 0, 1] = P[:, 1, 0] = b - k0 * b
        P[:, 1, 1] = c - k1 * b
        if self.misses:
            self._interpolate_to(frame, box, lms, score)
        self.observations.append(_observation(frame, box, lms, score, "detected"))
        self.hits = 1 if self.misses else self.hits + 1
        self.misses = 0
        if self.hits >= self.params.min_hits:
            self.confirmed = True

    def _interpolate_to(self, frame: int, box: np.ndarray, lms: np.ndarray | None, score: float) -> None:
        last = self.observations[-1]
        f0, n = last.frame, frame - last.frame
        b0 = np.asarray(last.box)
        l0 = None if last.landmarks is None else np.asarray(last.landmarks)
        for f in range(f0 + 1, frame):
            t = (f - f0) / n
            bi = (1 - t) * b0 + t * box
            li = None if (l0 is None or lms is None or l0.shape != lms.shape) else (1 - t) * l0 + t * lms
            si = (1 - t) * last.score + t * score
            self.observations.append(_observation(f, bi, li, si, "interpolated"))

    def median_height(self) -> float:
        heights = [o.box[3] - o.box[1] for o in self.observations if o.source == "detected"]
        return float(np.median(heights))


def _observation(frame: int, box: np.ndarray, lms: np.ndarray | None, score: float, source: str) -> FaceObservation:
    return FaceObservation(
        frame=int(frame),
        box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
        landmarks=None if lms is None else tuple((float(x), float(y)) for x, y in np.asarray(lms).reshape(-1, 2)),
        score=float(score),
        source=source,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------- the tracker


class ShotTracker:
    """Push-style tracker of one shot: :meth:`update` once per frame, then :meth:`finish`.

    Frame ``i`` of the shot (counting from 0 in calls to :meth:`update`) is film
    frame ``start_frame + i``.
    """

    def __init__(self, shot_id: str, start_frame: int, params: TrackerParams = TrackerParams()):
        if start_frame < 0:
            raise ValueError(f"start_frame must be >= 0, got {start_frame}")
        self.shot_id = shot_id
        self.start_frame = int(start_frame)
        self.params = params
        self._frame = self.start_frame  # next frame to consume
        self._active: list[_Track] = []
        self._ended: list[_Track] = []
        self._serial = 0
        self._skipped = 0
        self._finished = False

    def update(self, detections: Detections) -> None:
        """Consume the detections of the next frame."""
        if self._finished:
            raise RuntimeError(f"tracker of {self.shot_id} already finished")
        frame = self._frame
        self._frame += 1
        boxes, scores, lms = self._validated(detections, frame)
        p = self.params

        for trk in self._active:
            trk.predict()

        matched_tracks: set[int] = set()
        matched_dets: set[int] = set()
        if self._active and len(boxes):
            cost, allowed = self._cost(boxes)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols):
                if allowed[r, c]:
                    trk = self._active[r]
                    trk.update(frame, boxes[c], None if lms is None else lms[c], float(scores[c]))
                    matched_tracks.add(r)
                    matched_dets.add(c)

        still: list[_Track] = []
        for i, trk in enumerate(self._active):
            if i not in matched_tracks:
                trk.misses += 1
                if not trk.confirmed or trk.misses > p.max_gap:
                    self._ended.append(trk)
                    continue
            still.append(trk)
        self._active = still

        for c in range(len(boxes)):
            if c not in matched_dets:
                self._active.append(_Track(self._serial, frame, boxes[c], None if lms is None else lms[c], float(scores[c]), p))
                self._serial += 1

    def finish(self) -> TrackingResult:
        """End every track, apply the drop rules, number the tracks; call once."""
        if self._finished:
            raise RuntimeError(f"tracker of {self.shot_id} already finished")
        self._finished = True
        p = self.params
        candidates = self._ended + self._active
        self._active, self._ended = [], []
        candidates.sort(key=lambda t: (t.observations[0].frame, _centre_x(t), t.serial))

        kept: list[_Track] = []
        dropped: list[tuple[_Track, str]] = []
        for trk in candidates:
            reasons = []
            if not trk.confirmed:
                reasons.append(f"unconfirmed: {trk.hits} consecutive detections < min_hits={p.min_hits}")
            n = len(trk.observations)
            if n < p.min_track_frames:
                reasons.append(f"too short: {n} frames < min_track_frames={p.min_track_frames}")
            mh = trk.median_height()
            if mh < p.min_face_size:
                reasons.append(f"too small: median box height {mh:.1f} px < min_face_size={p.min_face_size:g}")
            if reasons:
                dropped.append((trk, "; ".join(reasons)))
            else:
                kept.append(trk)

        tracks = tuple(self._record(t, f"{self.shot_id}/face-{k:02d}") for k, t in enumerate(kept, start=1))
        drops = tuple(
            DroppedTrack(self._record(t, f"{self.shot_id}/dropped-{k:02d}"), reason)
            for k, (t, reason) in enumerate(dropped, start=1)
        )
        return TrackingResult(
            shot_id=self.shot_id,
            frames=FrameRange(self.start_frame, self._frame),
            tracks=tracks,
            dropped=drops,
            skipped_detections=self._skipped,
        )

    # ----------------------------------------------------------------- internals

    def _record(self, trk: _Track, track_id: str) -> FaceTrack:
        obs = tuple(trk.observations)
        return FaceTrack(id=track_id, shot_id=self.shot_id, frames=FrameRange(obs[0].frame, obs[-1].frame + 1), observations=obs)

    def _cost(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        pred = np.array([t.predicted_box() for t in self._active])
        iou = box_iou(pred, boxes)
        ph = pred[:, 3] - pred[:, 1]
        pc = np.column_stack([(pred[:, 0] + pred[:, 2]) / 2, (pred[:, 1] + pred[:, 3]) / 2])
        dc = np.column_stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2])
        dist = np.linalg.norm(pc[:, None, :] - dc[None, :, :], axis=2) / ph[:, None]
        # Centre gate from the filter's predicted uncertainty (plus detector noise).
        spread = np.sqrt(np.array([t.position_variance() for t in self._active]) + (p.measurement_std * ph) ** 2)
        gate = np.clip(p.gate_sigma * spread / ph, p.min_gate, p.max_center_distance)
        # Size gate against the prediction or the last detection, so a size velocity
        # misestimated from noise cannot lock a coasting track out.
        dh = boxes[None, :, 3] - boxes[None, :, 1]
        lh = np.array([t.observations[-1].box[3] - t.observations[-1].box[1] for t in self._active])
        ratio = np.minimum(_ratio(dh / ph[:, None]), _ratio(dh / lh[:, None]))
        allowed = (dist <= gate[:, None]) & (ratio <= p.max_size_ratio)
        cost = (1.0 - iou) + p.motion_weight * dist
        # Forbidden pairs get a cost no allowed assignment can reach, so they are
        # chosen only when nothing else is possible (and then discarded).
        return np.where(allowed, cost, 1e6), allowed

    def _validated(self, det: Detections, frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        boxes = np.asarray(det.boxes, dtype=np.float64)
        scores = np.asarray(det.scores, dtype=np.float64)
        lms = None if det.landmarks is None else np.asarray(det.landmarks, dtype=np.float64)
        n = 0 if boxes.size == 0 else boxes.shape[0]
        if n == 0:
            return np.zeros((0, 4)), np.zeros(0), None
        if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != (n,):
            raise ValueError(
                f"{self.shot_id} frame {frame}: detections need boxes (N, 4) and scores (N,), "
                f"got {boxes.shape} and {scores.shape}"
            )
        if lms is not None and (lms.ndim != 3 or lms.shape[0] != n or lms.shape[2] != 2):
            raise ValueError(f"{self.shot_id} frame {frame}: landmarks must be (N, K, 2) with N={n}, got {lms.shape}")
        ok = np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
        ok &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & (scores >= self.params.min_score)
        if lms is not None:
            ok &= np.isfinite(lms).all(axis=(1, 2))
        self._skipped += int(n - ok.sum())
        return boxes[ok], scores[ok], None if lms is None else lms[ok]


def _ratio(r: np.ndarray) -> np.ndarray:
    """Size ratio made symmetric: 2.0 for twice or half the size."""
    return np.maximum(r, 1.0 / r)


def _centre_x(trk: _Track) -> float:
    b = trk.observations[0].box
    return (b[0] + b[2]) / 2


def track_shot(
    shot_id: str, start_frame: int, detections: Iterable[Detections], params: TrackerParams = TrackerParams()
) -> TrackingResult:
    """Track the faces of one shot whose first frame is film frame ``start_frame``.

    ``detections`` yields one :class:`Detections` per frame of the shot, in order
    (an empty one where no face was found); it is consumed lazily, one frame at a
    time.  Returns the kept tracks (one :class:`FaceObservation` per frame of each,
    gaps interpolated) and the dropped ones with reasons.  No detections at all
    gives no tracks and no error.
    """
    tracker = ShotTracker(shot_id, start_frame, params)
    for det in detections:
        tracker.update(det)
    return tracker.finish()
