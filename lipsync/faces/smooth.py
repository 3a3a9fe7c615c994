"""Temporal smoothing of one face track: a zero-phase Rauch-Tung-Striebel smoother.

The detector's boxes and landmarks jitter by a few pixels from frame to frame; a
lip-sync crop that follows them shakes.  :func:`smooth_track` removes the jitter
without delaying the face: it runs a constant-velocity Kalman filter forward over
the track and the Rauch-Tung-Striebel (RTS) smoother backward, which is the
optimal *offline* estimate under that model and has no phase lag (the backward
pass cancels the forward filter's delay).  It works on one track, which lives in
one shot, so smoothing never crosses a cut.

Signals smoothed independently, each with its own noise level:

* the box as centre ``(cx, cy)`` and size ``(w, h)`` (smoothing corners directly
  would let noise on one edge move the centre);
* each landmark coordinate, in source pixels.

Strength adapts to each track and each signal.  The detector noise is first
estimated robustly from the track (median absolute second difference: white
noise of std ``s`` gives second differences of std ``sqrt(6) s``); then the
noise and the acceleration the motion model allows are chosen by maximum
likelihood of the Kalman innovations over a small grid (``noise_factors`` times
that estimate, ``accel_grid`` times the face's median height).  A still face
thus gets a stiff model and loses nearly all its jitter, while a fast-moving one
gets a loose model and is not rounded off; scaling by the face height smooths a
close-up and a wide shot alike.  The choice is per track, not per moment: a long
still track with one quick move is smoothed with a compromise (on synthetic
data the error during such a move stays around the detector noise).

Observations marked ``"interpolated"`` by the tracker are not measurements: the
smoother treats them as missing and fills them from the motion model; they keep
their ``"interpolated"`` mark.  ``"detected"`` observations whose box changed
become ``"smoothed"``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dubcore.records import FaceObservation, FaceTrack

__all__ = ["SmoothParams", "rts_smooth", "smooth_track"]


@dataclass(frozen=True)
class SmoothParams:
    """Parameters of :func:`smooth_track`.

    * ``adaptive`` (default True): choose noise and acceleration per signal by
      maximum likelihood over ``noise_factors`` x (estimated noise) and
      ``accel_grid`` x (median face height); False uses the noise estimate and
      ``accel_std`` as they are.
    * ``accel_grid`` (default 0.001 ... 0.5): candidate acceleration stds per
      frame squared, as fractions of the median box height.
    * ``noise_factors`` (default 0.5, 0.7, 1.0, 1.4): candidate multiples of the
      estimated noise std (the estimate is inflated by fast motion).
    * ``accel_std`` (default 0.01): acceleration std (fraction of face height per
      frame squared) when not adaptive or when the track is too short to estimate
      anything.  Smaller smooths harder.
    * ``measurement_std`` (default ``None``): detector noise in pixels.  ``None``
      estimates it per signal from the track (recommended); a number forces it
      and, with ``accel_std``, turns the adaptation off.
    * ``min_measurement_std`` (default 0.3 px): floor of the estimated noise, so a
      perfectly still synthetic track is not treated as noiseless.
    * ``fallback_measurement_std`` (default 0.02): noise as a fraction of the face
      height, used when the track has too few detections to estimate it.
    * ``min_estimate_frames`` (default 10): detections needed to estimate noise.
    * ``landmarks`` (default True): smooth landmarks too (otherwise kept as is).
    * ``min_frames`` (default 3): tracks with fewer detections are returned unchanged.
    """

    adaptive: bool = True
    accel_grid: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
    noise_factors: tuple[float, ...] = (0.5, 0.7, 1.0, 1.4)
    accel_std: float = 0.01
    measurement_std: float | None = None
    min_measurement_std: float = 0.3
    fallback_measurement_std: float = 0.02
    min_estimate_frames: int = 10
    landmarks: bool = True
    min_frames: int = 3

    def __post_init__(self) -> None:
        if not self.accel_std > 0:
            raise ValueError(f"accel_std must be > 0, got {self.accel_std}")
        if not self.accel_grid or min(self.accel_grid) <= 0 or not self.noise_factors or min(self.noise_factors) <= 0:
            raise ValueError("accel_grid and noise_factors must be non-empty and positive")
        if self.measurement_std is not None and not self.measurement_std > 0:
            raise ValueError(f"measurement_std must be > 0 or None, got {self.measurement_std}")
        if not self.min_measurement_std > 0 or not self.fallback_measurement_std > 0:
            raise ValueError("min_measurement_std and fallback_measurement_std must be > 0")
        if self.min_frames < 1 or self.min_estimate_frames < 3:
            raise ValueError("min_frames must be >= 1 and min_estimate_frames >= 3")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _kalman_pass(
    z: np.ndarray, mask: np.ndarray, r: np.ndarray, q: np.ndarray, store: bool
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Forward constant-velocity Kalman filter of ``K`` signals at once.

    Returns the innovation log-likelihood of each signal (first two measurements
    excluded: they only initialise position and velocity) and, if ``store``, the
    filtered and predicted states and covariances the RTS pass needs.
    """
    T, K = z.shape
    q11, q12, q22 = q / 4.0, q / 2.0, q  # white-noise acceleration, dt = 1 frame
    keep: dict[str, np.ndarray] = {}
    if store:
        for name in ("fp", "fv", "fa", "fb", "fc", "pp", "pv", "pa", "pb", "pc"):
            keep[name] = np.empty((T, K))
    first = int(np.argmax(mask))
    p = z[first].copy()
    v = np.zeros(K)
    # Velocity prior: vague relative to the signal's own spread.
    spread = np.ptp(z[mask], axis=0) if mask.sum() > 1 else np.zeros(K)
    a, b, c = np.full(K, np.inf), np.zeros(K), np.maximum(spread, np.sqrt(r)) ** 2 + 1.0
    loglik = np.zeros(K)
    seen = 0
    for t in range(T):
        if t > 0:
            p = p + v
            a, b, c = a + 2.0 * b + c + q11, b + c + q12, c + q22
        if store:
            keep["pp"][t], keep["pv"][t], keep["pa"][t], keep["pb"][t], keep["pc"][t] = p, v, a, b, c
        if mask[t]:
            if seen == 0:  # first measurement: position known to within r
                p, a, b = z[t].copy(), r.copy(), np.zeros(K)
            else:
                s = a + r
                k0, k1 = a / s, b / s
                y = z[t] - p
                if seen >= 2:
                    loglik -= 0.5 * (np.log(s) + y * y / s)
                p, v = p + k0 * y, v + k1 * y
                a, b, c = a - k0 * a, b - k0 * b, c - k1 * b
            seen += 1
        if store:
            keep["fp"][t], keep["fv"][t], keep["fa"][t], keep["fb"][t], keep["fc"][t] = p, v, a, b, c
    return loglik, keep


def rts_smooth(z: np.ndarray, mask: np.ndarray, r: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Constant-velocity RTS smoother of ``K`` independent signals.

    ``z`` is ``(T, K)`` measurements, ``mask`` ``(T,)`` bool (False: no measurement
    that frame; any pattern with at least one True works), ``r`` ``(K,)``
    measurement variances (px^2) and ``q`` ``(K,)`` acceleration variances (px^2
    per frame^4).  Returns the ``(T, K)`` smoothed positions.  Zero-phase: the
    result does not lag the input.
    """
    z = np.asarray(z, dtype=np.float64)
    T, K = z.shape
    mask = np.asarray(mask, dtype=bool)
    if T == 0:
        return z.copy()
    if not mask.any():
        raise ValueError("rts_smooth needs at least one measurement")
    r = np.broadcast_to(np.asarray(r, dtype=np.float64), (K,)).copy()
    q = np.broadcast_to(np.asarray(q, dtype=np.float64), (K,)).copy()
    _, f = _kalman_pass(z, mask, r, q, store=True)

    out = np.empty((T, K))
    sp, sv = f["fp"][-1].copy(), f["fv"][-1].copy()
    out[-1] = sp
    for t in range(T - 2, -1, -1):
        a, b, c = f["fa"][t], f["fb"][t], f["fc"][t]
        A, B, C = f["pa"][t + 1], f["pb"][t + 1], f["pc"][t + 1]
        if not np.isfinite(A).all():  # before the first measurement: extrapolate back
            sp = sp - sv
            out[t] = sp
            continue
        det = A * C - B * B
        # G = P_t F^T inv(P_{t+1|t}); P_t F^T = [[a + b, b], [b + c, c]].
        g00 = ((a + b) * C - b * B) / det
        g01 = (-(a + b) * B + b * A) / det
        g10 = ((b + c) * C - c * B) / det
        g11 = (-(b + c) * B + c * A) / det
        dp, dv = sp - f["pp"][t + 1], sv - f["pv"][t + 1]
        sp = f["fp"][t] + g00 * dp + g01 * dv
        sv = f["fv"][t] + g10 * dp + g11 * dv
        out[t] = sp
    return out


def _noise_std(z: np.ndarray, mask: np.ndarray, params: SmoothParams) -> np.ndarray | None:
    """Per-signal detector noise (px) from the detections of one track, or None
    when there are too few consecutive detections to tell."""
    idx = np.flatnonzero(mask)
    if idx.size < params.min_estimate_frames:
        return None
    # Second differences over runs of consecutive detections only.
    ok = (idx[2:] - idx[1:-1] == 1) & (idx[1:-1] - idx[:-2] == 1)
    if ok.sum() < params.min_estimate_frames - 2:
        return None
    zm = z[idx]
    d2 = (zm[2:] - 2.0 * zm[1:-1] + zm[:-2])[ok]
    # MAD -> std of a Gaussian (1.4826), then the second-difference gain sqrt(6).
    mad = np.median(np.abs(d2 - np.median(d2, axis=0)), axis=0)
    return np.maximum(1.4826 * mad / np.sqrt(6.0), params.min_measurement_std)


def _smooth_signals(z: np.ndarray, mask: np.ndarray, params: SmoothParams, height: float) -> np.ndarray:
    """Smooth the ``(T, K)`` signals of one track; strength chosen per signal."""
    K = z.shape[1]
    fixed_q = np.full(K, (params.accel_std * height) ** 2)
    if params.measurement_std is not None:
        return rts_smooth(z, mask, np.full(K, float(params.measurement_std) ** 2), fixed_q)
    std = _noise_std(z, mask, params)
    if std is None:
        fallback = max(params.fallback_measurement_std * height, params.min_measurement_std)
        return rts_smooth(z, mask, np.full(K, fallback**2), fixed_q)
    if not params.adaptive:
        return rts_smooth(z, mask, std**2, fixed_q)
    # Maximum likelihood over a grid of (noise, acceleration) per signal: the
    # noise estimate above is biased upwards by fast motion, and the right
    # acceleration depends on how the face moves.  One filter pass, G * K signals.
    r_grid = (np.asarray(params.noise_factors)[:, None] * std[None, :]) ** 2  # (Gr, K)
    q_grid = (np.asarray(params.accel_grid) * height) ** 2  # (Gq,)
    gr, gq = r_grid.shape[0], q_grid.shape[0]
    rr = np.broadcast_to(r_grid[:, None, :], (gr, gq, K)).reshape(-1, K)
    qq = np.broadcast_to(q_grid[None, :, None], (gr, gq, K)).reshape(-1, K)
    zz = np.tile(z, (1, gr * gq))
    loglik, _ = _kalman_pass(zz, mask, rr.reshape(-1), qq.reshape(-1), store=False)
    best = np.argmax(loglik.reshape(gr * gq, K), axis=0)
    cols = np.arange(K)
    return rts_smooth(z, mask, rr[best, cols], qq[best, cols])


def smooth_track(track: FaceTrack, params: SmoothParams = SmoothParams()) -> FaceTrack:
    """Return ``track`` with boxes (and landmarks) smoothed over time, zero-phase.

    Contract: same id, shot and frames; one observation per frame as before; scores
    unchanged; ``"interpolated"`` observations keep their mark (their box is
    re-estimated from the motion model); ``"detected"`` ones whose box changed
    become ``"smoothed"``.  Landmarks are smoothed only where every observation
    used as a measurement has them; otherwise they are left as they were.  Boxes
    stay at least 1 px wide and high.  Tracks with fewer than
    ``params.min_frames`` measured observations are returned unchanged.
    """
    obs = track.observations
    if not obs:
        return track
    mask = np.array([o.source != "interpolated" for o in obs], dtype=bool)
    if mask.sum() < params.min_frames:
        if len(obs) < params.min_frames:
            return track
        mask[:] = True  # nothing but interpolations: smooth them as they are
    boxes = np.array([o.box for o in obs], dtype=np.float64)
    cwh = np.column_stack(
        [(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2, boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]]
    )
    height = float(np.median(cwh[mask, 3]))
    height = max(height, 1.0)
    s = _smooth_signals(cwh, mask, params, height)
    w = np.maximum(s[:, 2], 1.0)
    h = np.maximum(s[:, 3], 1.0)
    new_boxes = np.column_stack([s[:, 0] - w / 2, s[:, 1] - h / 2, s[:, 0] + w / 2, s[:, 1] + h / 2])

    new_lms: np.ndarray | None = None
    has_lms = [o.landmarks is not None for o in obs]
    if params.landmarks and all(has_lms[i] for i in np.flatnonzero(mask)):
        n_points = len(obs[int(np.argmax(mask))].landmarks)  # type: ignore[arg-type]
        lm = np.zeros((len(obs), n_points * 2))
        lm_mask = mask.copy()
        for i, o in enumerate(obs):
            if o.landmarks is not None and len(o.landmarks) == n_points:
                lm[i] = np.asarray(o.landmarks, dtype=np.float64).reshape(-1)
            else:
                lm_mask[i] = False
        if lm_mask.sum() >= params.min_frames:
            new_lms = _smooth_signals(lm, lm_mask, params, height).reshape(len(obs), n_points, 2)

    out = []
    for i, o in enumerate(obs):
        box = tuple(float(v) for v in new_boxes[i])
        lms = o.landmarks if new_lms is None else tuple((float(x), float(y)) for x, y in new_lms[i])
        changed = any(abs(a - b) > 1e-9 for a, b in zip(box, o.box))
        source = "smoothed" if (changed and o.source == "detected") else o.source
        out.append(FaceObservation(frame=o.frame, box=box, landmarks=lms, score=o.score, source=source))  # type: ignore[arg-type]
    return FaceTrack(id=track.id, shot_id=track.shot_id, frames=track.frames, observations=tuple(out))
