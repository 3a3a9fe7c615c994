"""Temporal smoothing of face tracks, measured against synthetic ground truth.

Noise model: the true box plus Gaussian noise of 2 px on every coordinate.
Jitter is the mean absolute (Euclidean) second difference of the box centre; lag
is the sub-frame time shift that best aligns a trajectory with the truth (least
squares over a continuous shift, the truth being known analytically).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from dubcore.records import FaceObservation, FaceTrack
from dubcore.timebase import FrameRange
from lipsync.faces.smooth import SmoothParams, rts_smooth, smooth_track

NOISE_PX = 2.0
Truth = Callable[[np.ndarray], np.ndarray]


def still_truth(t: np.ndarray) -> np.ndarray:
    return np.tile([600.0, 300.0, 700.0, 420.0], (len(np.atleast_1d(t)), 1))


def moving_truth(t: np.ndarray) -> np.ndarray:
    """Sine of amplitude 80 px over 60 frames in x (plus a slower one in y), scale 1.0 -> 1.4."""
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    scale = 1.0 + 0.4 * t / 59
    cx = 640 + 80 * np.sin(2 * np.pi * t / 60)
    cy = 360 + 20 * np.sin(2 * np.pi * t / 45)
    w, h = 100 * scale, 120 * scale
    return np.column_stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def landmarks_of(box: np.ndarray) -> np.ndarray:
    fx = np.array([0.3, 0.7, 0.5, 0.35, 0.65])
    fy = np.array([0.4, 0.4, 0.6, 0.8, 0.8])
    return np.column_stack([box[0] + fx * (box[2] - box[0]), box[1] + fy * (box[3] - box[1])])


def noisy_track(truth: Truth, n: int, seed: int, start: int = 100) -> tuple[FaceTrack, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true_boxes = truth(np.arange(n))
    boxes = true_boxes + rng.normal(0, NOISE_PX, true_boxes.shape)
    obs = []
    for i, b in enumerate(boxes):
        lms = landmarks_of(true_boxes[i]) + rng.normal(0, NOISE_PX, (5, 2))
        obs.append(FaceObservation(start + i, tuple(map(float, b)), tuple(map(tuple, lms.tolist())), 0.9, "detected"))
    return FaceTrack("shot-0001/face-01", "shot-0001", FrameRange(start, start + n), tuple(obs)), true_boxes, boxes


def boxes_of(track: FaceTrack) -> np.ndarray:
    return np.array([o.box for o in track.observations])


def centres(boxes: np.ndarray) -> np.ndarray:
    return np.column_stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2])


def jitter(points: np.ndarray) -> float:
    """Mean absolute second difference of a (T, 2) trajectory, px per frame^2."""
    return float(np.mean(np.linalg.norm(points[2:] - 2 * points[1:-1] + points[:-2], axis=1)))


def lag(boxes: np.ndarray, truth: Truth) -> float:
    """Shift tau (frames) minimising sum |c(t) - c_true(t - tau)|^2: > 0 means behind."""
    c = centres(boxes)
    t = np.arange(len(c), dtype=np.float64)
    res = minimize_scalar(lambda tau: np.mean(np.sum((c - centres(truth(t - tau))) ** 2, axis=1)), bounds=(-5, 5), method="bounded")
    return float(res.x)


def test_lag_measure_recovers_a_known_shift() -> None:
    t = np.arange(60, dtype=np.float64)
    assert lag(moving_truth(t - 0.7), moving_truth) == pytest.approx(0.7, abs=0.01)
    assert lag(moving_truth(t + 1.5), moving_truth) == pytest.approx(-1.5, abs=0.01)


@pytest.mark.parametrize("seed", range(5))
def test_still_face_jitter_drops_at_least_3x(seed: int) -> None:
    track, truth, raw = noisy_track(still_truth, 60, seed)
    smoothed = smooth_track(track, SmoothParams())
    factor = jitter(centres(raw)) / jitter(centres(boxes_of(smoothed)))
    assert factor >= 3.0, f"jitter reduced only {factor:.2f}x"
    # Landmarks too.
    raw_lm = np.array([o.landmarks for o in track.observations])
    sm_lm = np.array([o.landmarks for o in smoothed.observations])
    for k in range(5):
        assert jitter(raw_lm[:, k]) / jitter(sm_lm[:, k]) >= 3.0
    # And it is closer to the truth.
    assert np.abs(boxes_of(smoothed) - truth).mean() < np.abs(raw - truth).mean()


@pytest.mark.parametrize("seed", range(5))
def test_moving_face_no_lag_and_lower_error(seed: int) -> None:
    track, truth, raw = noisy_track(moving_truth, 60, seed)
    smoothed = boxes_of(smooth_track(track, SmoothParams()))
    measured = lag(smoothed, moving_truth)
    assert abs(measured) < 1.0, f"smoothed centre lags the truth by {measured:.2f} frames"
    err_smooth = np.linalg.norm(centres(smoothed) - centres(truth), axis=1).mean()
    err_raw = np.linalg.norm(centres(raw) - centres(truth), axis=1).mean()
    assert err_smooth < err_raw
    assert np.abs(smoothed - truth).mean() < np.abs(raw - truth).mean()  # corners, i.e. size too
    assert jitter(centres(smoothed)) < jitter(centres(raw))


def test_sources_frames_and_scores() -> None:
    track, _, _ = noisy_track(moving_truth, 40, seed=9, start=7)
    obs = list(track.observations)
    for i in (10, 11, 12):  # a gap the tracker filled
        o = obs[i]
        obs[i] = FaceObservation(o.frame, o.box, o.landmarks, 0.5, "interpolated")
    track = FaceTrack(track.id, track.shot_id, track.frames, tuple(obs))
    out = smooth_track(track, SmoothParams())
    assert (out.id, out.shot_id, out.frames) == (track.id, track.shot_id, track.frames)
    assert [o.frame for o in out.observations] == list(range(7, 47))
    assert [o.score for o in out.observations] == [o.score for o in track.observations]
    for o in out.observations:
        assert o.source == ("interpolated" if o.frame - 7 in (10, 11, 12) else "smoothed")
    assert all(len(o.landmarks) == 5 for o in out.observations)  # type: ignore[arg-type]


def test_smoothed_interpolations_follow_the_motion() -> None:
    """Frames without a measurement are re-estimated from the motion model, not left raw."""
    track, truth, _ = noisy_track(moving_truth, 60, seed=11)
    obs = list(track.observations)
    for i in range(20, 26):  # corrupt: these boxes must be ignored as measurements
        o = obs[i]
        obs[i] = FaceObservation(o.frame, (0.0, 0.0, 10.0, 10.0), None, 0.1, "interpolated")
    out = smooth_track(FaceTrack(track.id, track.shot_id, track.frames, tuple(obs)), SmoothParams())
    err = np.abs(boxes_of(out)[20:26] - truth[20:26]).max()
    assert err < 15.0


def test_short_track_unchanged_and_params_validated() -> None:
    track, _, _ = noisy_track(still_truth, 2, seed=0)
    assert smooth_track(track, SmoothParams()) == track
    with pytest.raises(ValueError):
        SmoothParams(accel_std=0)


def test_rts_smoother_is_exact_on_a_constant_velocity_line() -> None:
    t = np.arange(30, dtype=np.float64)
    z = np.column_stack([3.0 + 2.5 * t, -1.0 * t])
    out = rts_smooth(z, np.ones(30, bool), np.array([4.0, 4.0]), np.array([0.01, 0.01]))
    assert np.allclose(out, z, atol=1e-3)  # exact but for the (vague) velocity prior


def shake_truth(t: np.ndarray) -> np.ndarray:
    """A fast head shake: 60 px amplitude, 12-frame period (acceleration ~16 px/frame^2)."""
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    cx = 640 + 60 * np.sin(2 * np.pi * t / 12)
    return np.column_stack([cx - 50, 300 + 0 * t, cx + 50, 420 + 0 * t])


def test_fast_motion_is_not_smoothed_away() -> None:
    """Adaptive strength: a fixed stiff model would cut the shake's amplitude by tens of px."""
    track, truth, raw = noisy_track(shake_truth, 60, seed=3)
    adaptive = boxes_of(smooth_track(track, SmoothParams()))
    err = np.linalg.norm(centres(adaptive) - centres(truth), axis=1).mean()
    assert err < np.linalg.norm(centres(raw) - centres(truth), axis=1).mean()
    assert abs(lag(adaptive, shake_truth)) < 0.2
    stiff = boxes_of(smooth_track(track, SmoothParams(adaptive=False, accel_std=0.01)))
    assert np.linalg.norm(centres(stiff) - centres(truth), axis=1).mean() > 10 * err


def test_fixed_strength_and_short_tracks() -> None:
    track, truth, raw = noisy_track(still_truth, 60, seed=1)
    fixed = boxes_of(smooth_track(track, SmoothParams(adaptive=False)))
    assert jitter(centres(raw)) / jitter(centres(fixed)) >= 3.0
    forced = boxes_of(smooth_track(track, SmoothParams(measurement_std=2.0)))
    assert jitter(centres(raw)) / jitter(centres(forced)) >= 3.0
    short, _, _ = noisy_track(moving_truth, 6, seed=2)  # too short to estimate noise
    out = smooth_track(short, SmoothParams())
    assert out.frames == short.frames and all(o.source == "smoothed" for o in out.observations)
