"""Which face tracks are faces: track-level evidence decides what casting may drive.

The detector judges one frame at a time and its threshold (0.6 by default) is set
for recall on still images, so a film always yields a few tracks that are not
faces -- an ear, a patch of window blinds, the back of a head -- at scores just
above that threshold.  Re-voicing one of them is a visible defect.  A track is
many looks at the same object, which is much stronger evidence than one frame;
:func:`assess_tracks` reads that evidence for every track of one shot and marks
each :class:`TrackQuality` ``castable`` or not, with a reason an operator can
read.  Weak tracks stay in faces.json (never in ``dropped``, which is the
tracker's too-small/too-short list) and are never driven unless the operator
names them in ``casting.tracks``.

All evidence is taken from the *measured* frames of a track (``source`` other
than ``"interpolated"``: the tracker's gap fills are guesses, not looks).

Rules that make a track weak on their own -- each is a property every face has:

1. **Score floor** -- median detection score below ``min_median_score`` (0.7).
   The per-frame threshold admits single looks that the detector barely
   believes; a real face seen for a whole track is scored well above it most
   of the time (on the shared real clips the weakest real track, a face
   turning into profile, has median 0.77; the false tracks seen on held-out
   footage had 0.61-0.62).  The median, not the mean, so a few bad frames of a
   real face (motion blur, a hand passing) do not count against it.
2. **Landmark geometry** -- in more than half of the measured frames
   (``min_landmark_fraction``) the five landmarks are not arranged as a face
   can be.  A frame's arrangement is plausible when every point lies inside the
   box (tolerance ``landmark_margin`` of the box size: points of a profile touch
   its edge); the mouth lies below the eyes -- measured along the face's own
   axis, the normal of the mean of the eye and mouth lines, so a tilted head
   passes (when both lines are shorter than ``min_axis_width`` of the box, a
   profile, the head is taken as upright) -- by ``eye_mouth_range`` of the box
   height: about 0.35-0.4 on every real face seen (turning the head left or
   right does not change it; nodding shrinks it as the cosine of the angle, so
   0.2 still admits a head bowed by about 55 degrees); the nose tip projects
   between the eye line and the mouth (``nose_range`` of that distance, with
   slack for a raised or lowered head); and the eyes are at most
   ``max_eye_width`` of the box width apart (about 0.45 frontal, less when the
   head turns -- never wider than the face).  These follow from anatomy, not
   from any clip; the landmark regression of a false detection breaks them
   (on Big Buck Bunny a knot of tree roots, tracked at median score 0.76 at
   the default threshold, has its "mouth" level with or above its "eyes" in
   every frame; no frame of any real face in the shared clips fails).
3. **Duplicate** -- in most frames it shares with a stronger track (higher
   median score), more than ``max_overlap`` (0.5) of the smaller of the two
   boxes is covered by the other.  Two faces cannot occupy the same place; a
   box inside a face (or around it) that NMS let through is a second look at
   the same face, and a face hidden that much behind another has no mouth to
   re-voice.
4. **Mostly guessed** -- fewer than ``min_detected_fraction`` (0.5) of its
   frames were detected; the rest were interpolated by the tracker.  The
   detector keeps losing it, so most of its boxes (and any re-voiced mouth
   there) would be guesses.

Signs that are common on a single real face but which false detections show
together -- two or more make a track weak (``max_doubts`` = 1 tolerated):

* **Weak next to the shot's best face** -- the median score's log-odds are
  below ``relative_score`` (0.5) of the log-odds of the strongest track of the
  shot.  The strongest track shows what this detector gives a clear face under
  this shot's light, grain and blur.  Log-odds, because the score is a
  probability: 0.6 next to 0.9 is a much larger gap than 0.9 next to 0.96.
  Scores are capped at ``score_saturation`` (0.99) first: past it the detector
  is sure, and what separates 0.999 from 0.99999 is contrast and size, not
  faceness (so next to a saturated face a track needs about 0.91).
* **Small** -- median box height below ``relative_size`` (0.5) of the shot's
  largest face (a face twice as far away as the main one), or below
  ``min_frame_fraction`` (1/20) of the frame height.
* **Unstable** -- the box jumps: the median frame-to-frame acceleration of its
  centre (the second difference, which a steady motion does not have) exceeds
  ``max_jitter`` (0.15) face heights, or that of its log height exceeds the
  same value.  Detector noise on a real face is a few percent of its height
  (median second difference about 1.65 noise std); a box wandering by a tenth
  of its size from frame to frame is not locked on anything.

A track with no landmarks (another detector, an old faces.json) skips rule 2.
Evidence values are stored with the verdict so the rule can be audited and
re-run; the ``reason`` of a weak track lists every rule it failed, with the
values, and a castable track's summarises what it showed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from dubcore.records import FaceObservation, FaceTrack

__all__ = ["QualityParams", "TrackQuality", "assess_tracks", "landmark_problems"]


@dataclass(frozen=True)
class TrackQuality:
    """The verdict on one track: ``castable`` or not, why, and the evidence (floats) behind it."""

    track_id: str
    castable: bool
    reason: str
    evidence: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "castable": bool(self.castable),
            "reason": self.reason,
            "evidence": {k: round(float(v), 5) for k, v in self.evidence.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrackQuality":
        castable = data["castable"]
        if not isinstance(castable, bool):
            raise ValueError(f"track quality {data.get('track_id')!r}: castable must be true or false, got {castable!r}")
        return cls(
            track_id=str(data["track_id"]),
            castable=castable,
            reason=str(data.get("reason", "")),
            evidence={str(k): float(v) for k, v in (data.get("evidence") or {}).items()},
        )


@dataclass(frozen=True)
class QualityParams:
    """Thresholds of :func:`assess_tracks` (see the module docstring for why each rule holds).

    Rules failing alone:

    * ``min_median_score`` (0.7): floor on the median detection score.
    * ``min_landmark_fraction`` (0.5): share of measured frames whose landmarks
      must be plausible; below it the track fails.
    * ``landmark_margin`` (0.1): how far (fraction of box width/height) a landmark
      may lie outside its box and still count as inside.
    * ``eye_mouth_range`` ((0.2, 0.7)): distance from the eye line to the mouth
      centre, along the face's axis, as a fraction of the box height.
    * ``min_axis_width`` (0.2): below this length (fraction of box width) of the
      summed eye and mouth lines the face's tilt is not measurable; upright is
      assumed.
    * ``nose_range`` ((-0.25, 1.25)): position of the nose tip between the eye line
      (0) and the mouth (1).
    * ``max_eye_width`` (0.8): largest eye distance, fraction of box width.
    * ``max_overlap`` (0.5): share of the smaller box covered by a stronger
      track's box above which (in most shared frames) the weaker is a duplicate.
    * ``min_detected_fraction`` (0.5): share of frames that must be detected
      rather than interpolated.

    Doubts (more than ``max_doubts`` (1) make a track weak):

    * ``relative_score`` (0.5): log-odds of the median score as a fraction of
      the shot's strongest track's, both capped at ``score_saturation`` (0.99).
    * ``relative_size`` (0.5): median box height as a fraction of the shot's
      largest face; ``min_frame_fraction`` (0.05): ... of the frame height.
    * ``max_jitter`` (0.15): median |second difference| of the box centre (face
      heights) or of the log box height, between consecutive detected frames.
    """

    min_median_score: float = 0.7
    min_landmark_fraction: float = 0.5
    landmark_margin: float = 0.1
    eye_mouth_range: tuple[float, float] = (0.2, 0.7)
    nose_range: tuple[float, float] = (-0.25, 1.25)
    max_eye_width: float = 0.8
    min_axis_width: float = 0.2
    max_overlap: float = 0.5
    min_detected_fraction: float = 0.5
    relative_score: float = 0.5
    relative_size: float = 0.5
    min_frame_fraction: float = 0.05
    max_jitter: float = 0.15
    score_saturation: float = 0.99
    max_doubts: int = 1

    def __post_init__(self) -> None:
        for name in ("min_median_score", "min_landmark_fraction", "max_overlap", "min_detected_fraction",
                     "relative_score", "relative_size", "min_frame_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"QualityParams.{name}={v} must be within [0, 1]")
        if not 0.5 < self.score_saturation < 1.0:
            raise ValueError(f"QualityParams.score_saturation={self.score_saturation} must be within (0.5, 1)")
        for name in ("eye_mouth_range", "nose_range"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(f"QualityParams.{name}={(lo, hi)} must be (low, high) with low < high")
        if self.landmark_margin < 0 or self.max_eye_width <= 0 or self.max_jitter <= 0 or self.max_doubts < 0:
            raise ValueError("QualityParams: landmark_margin >= 0, max_eye_width > 0, max_jitter > 0 and max_doubts >= 0 needed")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["eye_mouth_range"] = list(self.eye_mouth_range)
        d["nose_range"] = list(self.nose_range)
        return d


# --------------------------------------------------------------------------- landmarks

_LANDMARK_CHECKS = (
    "outside the box",
    "mouth not below the eyes",
    "mouth too close to the eyes",
    "mouth too far below the eyes",
    "nose not between eyes and mouth",
    "eyes wider than the face",
)


def landmark_problems(box: Sequence[float], landmarks: Sequence[Sequence[float]], params: QualityParams = QualityParams()) -> list[str]:
    """What is implausible about one frame's five landmarks (eyes, nose, mouth corners) in ``box``; empty when plausible."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = max(x2 - x1, 1e-6), max(y2 - y1, 1e-6)
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if pts.shape[0] != 5:
        return [f"{pts.shape[0]} landmarks, not 5"]
    problems = []
    mx, my = params.landmark_margin * w, params.landmark_margin * h
    if (pts[:, 0] < x1 - mx).any() or (pts[:, 0] > x2 + mx).any() or (pts[:, 1] < y1 - my).any() or (pts[:, 1] > y2 + my).any():
        problems.append(_LANDMARK_CHECKS[0])
    left_eye, right_eye, nose, mouth_l, mouth_r = pts
    eyes = (left_eye + right_eye) / 2
    mouth = (mouth_l + mouth_r) / 2
    iod = float(np.hypot(*(right_eye - left_eye)))
    # The face's own "down": the normal (towards the chin; image y grows downwards)
    # of the mean of the eye and mouth lines, so a tilted head is measured along
    # its own axis.  When both lines are short (a profile: the far eye and mouth
    # corner are hidden behind the near ones) their direction is noise; assume an
    # upright head then.
    axis = (right_eye - left_eye) + (mouth_r - mouth_l)
    span = float(np.hypot(*axis))
    normal = np.array([-axis[1], axis[0]]) / span if span > params.min_axis_width * w else np.array([0.0, 1.0])
    down = float((mouth - eyes) @ normal)
    lo, hi = params.eye_mouth_range
    if down <= 0:
        problems.append(_LANDMARK_CHECKS[1])
    elif down < lo * h:
        problems.append(_LANDMARK_CHECKS[2])
    elif down > hi * h:
        problems.append(_LANDMARK_CHECKS[3])
    else:
        t = float((nose - eyes) @ normal) / down
        if not params.nose_range[0] <= t <= params.nose_range[1]:
            problems.append(_LANDMARK_CHECKS[4])
    if iod > params.max_eye_width * w:
        problems.append(_LANDMARK_CHECKS[5])
    return problems


# --------------------------------------------------------------------------- evidence


def _measured(track: FaceTrack) -> list[FaceObservation]:
    return [o for o in track.observations if o.source != "interpolated"]


def _height(o: FaceObservation) -> float:
    return o.box[3] - o.box[1]


def _logit(p: float, cap: float) -> float:
    p = min(max(p, 1 - cap), cap)
    return math.log(p / (1 - p))


def _jitter(track: FaceTrack, median_height: float) -> tuple[float, float]:
    """Median |second difference| of the centre (face heights) and of log height, over runs of measured frames."""
    obs = track.observations
    if len(obs) < 3 or median_height <= 0:
        return 0.0, 0.0
    box = np.array([o.box for o in obs], dtype=np.float64)
    ok = np.array([o.source != "interpolated" for o in obs])
    centre = np.column_stack([(box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2])
    logh = np.log(np.maximum(box[:, 3] - box[:, 1], 1e-6))
    triple = ok[:-2] & ok[1:-1] & ok[2:]
    if not triple.any():
        return 0.0, 0.0
    dc = np.linalg.norm(centre[2:] - 2 * centre[1:-1] + centre[:-2], axis=1)[triple] / median_height
    dh = np.abs(logh[2:] - 2 * logh[1:-1] + logh[:-2])[triple]
    return float(np.median(dc)), float(np.median(dh))


def _overlap(a: FaceTrack, b: FaceTrack) -> tuple[float, int]:
    """Median over shared measured frames of (intersection / smaller box area), and the number of such frames."""
    fa = {o.frame: o.box for o in _measured(a)}
    shared = [(fa[o.frame], o.box) for o in _measured(b) if o.frame in fa]
    if not shared:
        return 0.0, 0
    vals = []
    for p, q in shared:
        iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
        ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
        small = min((p[2] - p[0]) * (p[3] - p[1]), (q[2] - q[0]) * (q[3] - q[1]))
        vals.append(iw * ih / small if small > 0 else 0.0)
    return float(np.median(vals)), len(shared)


def _below(v: float, limit: float) -> str:
    """``v`` with enough digits to read as below ``limit`` (0.697, not 0.70, under 0.7)."""
    for digits in (2, 3, 4):
        text = f"{v:.{digits}f}"
        if float(text) < limit:
            return text
    return f"{v:.6f}"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def assess_tracks(
    tracks: Sequence[FaceTrack], frame_size: tuple[int, int], params: QualityParams = QualityParams()
) -> dict[str, TrackQuality]:
    """Judge every track of ONE shot (so the relative rules compare it with the shot's other faces).

    ``frame_size`` is ``(width, height)`` of the frames the boxes are in.
    Returns ``{track.id: TrackQuality}`` for every track given, in order.
    """
    width, height = (int(v) for v in frame_size)
    if width <= 0 or height <= 0:
        raise ValueError(f"assess_tracks: frame_size must be (width, height) > 0, got {frame_size}")
    shots = {t.shot_id for t in tracks}
    if len(shots) > 1:
        raise ValueError(f"assess_tracks: tracks of one shot expected, got shots {sorted(shots)}; call it once per shot")

    base: dict[str, dict[str, float]] = {}
    for t in tracks:
        meas = _measured(t)
        if not meas:  # a track is never all interpolated, but stay total
            meas = list(t.observations)
        heights = [_height(o) for o in meas]
        median_h = float(np.median(heights))
        e: dict[str, float] = {
            "frames": float(len(t.observations)),
            "detected_fraction": len(_measured(t)) / max(len(t.observations), 1),
            "median_score": float(np.median([o.score for o in meas])),
            "median_height_px": median_h,
            "height_vs_frame": median_h / height,
        }
        with_lms = [o for o in meas if o.landmarks is not None]
        if with_lms:
            counts = dict.fromkeys(_LANDMARK_CHECKS, 0)
            plausible = 0
            for o in with_lms:
                probs = landmark_problems(o.box, o.landmarks, params)  # type: ignore[arg-type]
                plausible += not probs
                for p in probs:
                    counts[p] = counts.get(p, 0) + 1
            e["landmarks_plausible"] = plausible / len(with_lms)
            for name, n in counts.items():
                e["landmarks_" + name.replace(" ", "_")] = n / len(with_lms)
        e["centre_jitter"], e["size_jitter"] = _jitter(t, median_h)
        base[t.id] = e

    best_logit = max((_logit(e["median_score"], params.score_saturation) for e in base.values()), default=0.0)
    largest = max((e["median_height_px"] for e in base.values()), default=0.0)

    out: dict[str, TrackQuality] = {}
    for t in tracks:
        e = base[t.id]
        logit = _logit(e["median_score"], params.score_saturation)
        e["score_vs_best"] = logit / best_logit if best_logit > 0 else 1.0
        e["height_vs_largest"] = e["median_height_px"] / largest if largest > 0 else 1.0
        # Duplicate of a stronger track?
        dup_of, dup_overlap = None, 0.0
        for other in tracks:
            if other.id == t.id:
                continue
            oe = base[other.id]
            stronger = (oe["median_score"], oe["median_height_px"], other.id) > (e["median_score"], e["median_height_px"], t.id)
            if not stronger:
                continue
            ov, n_shared = _overlap(t, other)
            n_meas = len(_measured(t))
            if n_shared * 2 > n_meas and ov > dup_overlap:
                dup_of, dup_overlap = other.id, ov
        e["overlap_with_stronger"] = dup_overlap

        fails: list[str] = []
        if e["median_score"] < params.min_median_score:
            fails.append(f"median detection score {_below(e['median_score'], params.min_median_score)} < {params.min_median_score:g}")
        if "landmarks_plausible" in e and e["landmarks_plausible"] < params.min_landmark_fraction:
            worst = max(_LANDMARK_CHECKS, key=lambda k: e["landmarks_" + k.replace(" ", "_")])
            fails.append(
                f"landmarks implausible in {_pct(1 - e['landmarks_plausible'])} of detected frames "
                f"(most often {worst}: {_pct(e['landmarks_' + worst.replace(' ', '_')])})"
            )
        if dup_of is not None and dup_overlap > params.max_overlap:
            fails.append(f"duplicate of {dup_of}: {_pct(dup_overlap)} of the smaller box is covered by that stronger track")
        if e["detected_fraction"] < params.min_detected_fraction:
            fails.append(f"detected in only {_pct(e['detected_fraction'])} of its {int(e['frames'])} frames (the rest interpolated)")

        doubts: list[str] = []
        if best_logit > 0 and logit < params.relative_score * best_logit:
            doubts.append(f"weak next to the shot's best face (score log-odds {logit:.1f} vs {best_logit:.1f})")
        if e["height_vs_largest"] < params.relative_size:
            doubts.append(f"small: {e['median_height_px']:.0f} px, {e['height_vs_largest']:.2f} of the shot's largest face")
        elif e["height_vs_frame"] < params.min_frame_fraction:
            doubts.append(f"small: {e['median_height_px']:.0f} px, {e['height_vs_frame']:.3f} of the frame height")
        if max(e["centre_jitter"], e["size_jitter"]) > params.max_jitter:
            doubts.append(f"unstable box (jitter {e['centre_jitter']:.2f} face heights, size {e['size_jitter']:.2f})")
        e["doubts"] = float(len(doubts))

        if len(doubts) > params.max_doubts:
            fails.append(" and ".join(doubts))
            doubts = []
        castable = not fails
        if castable:
            reason = (
                f"castable: median score {e['median_score']:.2f}, {e['median_height_px']:.0f} px "
                f"({e['height_vs_largest']:.2f} of the shot's largest face), detected in {_pct(e['detected_fraction'])} of "
                f"{int(e['frames'])} frames"
                + (f", landmarks plausible in {_pct(e['landmarks_plausible'])}" if "landmarks_plausible" in e else "")
                + (f"; note: {doubts[0]}" if doubts else "")
            )
        else:
            reason = (
                "not castable: " + "; ".join(fails) + (f"; also {doubts[0]}" if doubts else "")
                + " (name it in casting.tracks to drive it anyway)"
            )
        out[t.id] = TrackQuality(t.id, castable, reason, {k: float(v) for k, v in e.items()})
    return out
