"""Tracker and faces.json on synthetic detections with known ground truth (no model)."""

from __future__ import annotations

import json
from fractions import Fraction
from types import SimpleNamespace
from typing import Iterator

import numpy as np
import pytest

from dubcore.records import FaceObservation, FaceTrack, Shot
from dubcore.schema import SchemaError, schema_tag
from dubcore.timebase import FrameRange
from lipsync.faces.facesfile import FacesFile, read_faces, write_faces
from lipsync.faces.track import Detections, TrackerParams, box_iou, track_shot

# Landmarks of a face as fractions of its box: eyes, nose, mouth corners.
_LM = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])


def landmarks_of(box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = box
    return np.column_stack([x1 + _LM[:, 0] * (x2 - x1), y1 + _LM[:, 1] * (y2 - y1)])


def face_box(cx: float, cy: float, h: float) -> np.ndarray:
    w = 0.8 * h
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def detections(boxes: list[np.ndarray], rng: np.random.Generator | None = None, noise: float = 1.5) -> Detections:
    """Detections of the given true boxes, with Gaussian noise on every coordinate."""
    if not boxes:
        return Detections(np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, 5, 2)))
    b = np.array(boxes, dtype=np.float64)
    lms = np.array([landmarks_of(x) for x in b])
    if rng is not None:
        b = b + rng.normal(0, noise, b.shape)
        lms = lms + rng.normal(0, noise, lms.shape)
    return Detections(boxes=b, scores=np.full(len(b), 0.95), landmarks=lms)


def sine_path(n: int, amplitude: float = 80.0, h0: float = 120.0) -> list[np.ndarray]:
    return [face_box(640 + amplitude * np.sin(2 * np.pi * t / 60), 360 + 20 * np.sin(2 * np.pi * t / 45), h0 * (1 + 0.4 * t / n)) for t in range(n)]


def boxes_of(track: FaceTrack) -> np.ndarray:
    return np.array([o.box for o in track.observations])


# --------------------------------------------------------------------------- tracking


def test_single_moving_face_is_one_track_covering_every_frame() -> None:
    rng = np.random.default_rng(1)
    truth = sine_path(90)
    result = track_shot("shot-0003", 500, (detections([b], rng) for b in truth), TrackerParams())
    assert result.frames == FrameRange(500, 590)
    assert len(result.tracks) == 1 and result.dropped == ()
    track = result.tracks[0]
    assert track.id == "shot-0003/face-01" and track.shot_id == "shot-0003"
    assert track.frames == FrameRange(500, 590)
    assert [o.frame for o in track.observations] == list(range(500, 590))
    assert all(o.source == "detected" for o in track.observations)
    assert all(len(o.landmarks) == 5 for o in track.observations)  # type: ignore[arg-type]
    ious = np.diag(box_iou(boxes_of(track), np.array(truth)))
    assert ious.min() > 0.9


@pytest.mark.parametrize("occlude", [False, True], ids=["both-visible", "one-occluded"])
def test_two_faces_crossing_keep_their_ids(occlude: bool) -> None:
    rng = np.random.default_rng(2)
    n = 60
    a = [face_box(200 + 800 * t / (n - 1), 300, 120) for t in range(n)]  # left to right
    b = [face_box(1000 - 800 * t / (n - 1), 330, 110) for t in range(n)]  # right to left, behind
    frames = []
    hidden = 0
    for ba, bb in zip(a, b):
        overlap = box_iou(ba[None], bb[None])[0, 0]
        if occlude and overlap > 0.2:
            frames.append(detections([ba], rng))  # b is behind a: not detected
            hidden += 1
        else:
            frames.append(detections([bb, ba], rng))  # detector order is arbitrary
    assert not occlude or 3 <= hidden <= TrackerParams().max_gap
    result = track_shot("shot-0001", 0, frames, TrackerParams())
    assert [t.id for t in result.tracks] == ["shot-0001/face-01", "shot-0001/face-02"]
    ta, tb = result.tracks  # ordered by first frame, then x: a starts on the left
    for track, truth in ((ta, a), (tb, b)):
        assert track.frames == FrameRange(0, n)
        ious = np.diag(box_iou(boxes_of(track), np.array(truth)))
        assert ious.min() > 0.6, f"{track.id} swapped or lost: min IoU to its own truth {ious.min():.2f}"
    if occlude:
        assert sum(o.source == "interpolated" for o in tb.observations) == hidden
        assert all(o.source == "detected" for o in ta.observations)


@pytest.mark.parametrize("seed", range(5))
def test_side_by_side_faces_with_flickering_detections_do_not_swap(seed: int) -> None:
    """Two still faces 0.8 face heights apart, each missed in 20% of frames at random."""
    rng = np.random.default_rng(100 + seed)
    n = 60
    left, right = face_box(400, 300, 100), face_box(480, 300, 100)
    frames = [detections([b for b in (right, left) if rng.random() > 0.2], rng, noise=3.0) for _ in range(n)]
    result = track_shot("s", 0, frames, TrackerParams())
    assert len(result.tracks) == 2
    for track in result.tracks:
        ious = box_iou(boxes_of(track), np.array([left, right])).min(axis=0)
        assert ious.max() > 0.5, f"{track.id} jumped between the two faces"


def test_fast_motion_with_missed_frames_stays_one_track() -> None:
    """Sine of 200 px amplitude over 30 frames (up to 0.35 face heights a frame)."""
    rng = np.random.default_rng(8)
    n = 90
    truth = [face_box(640 + 200 * np.sin(2 * np.pi * t / 30), 360, 120) for t in range(n)]
    missing = set(rng.choice(np.arange(1, n - 1), size=n // 10, replace=False).tolist())
    result = track_shot("s", 0, [detections([] if t in missing else [b], rng, noise=3.0) for t, b in enumerate(truth)], TrackerParams())
    assert [t.frames for t in result.tracks] == [FrameRange(0, n)]


def test_missed_detections_are_interpolated() -> None:
    rng = np.random.default_rng(3)
    n = 100
    truth = sine_path(n)
    missing = set(rng.choice(np.arange(1, n - 1), size=n // 10, replace=False).tolist())
    frames = [detections([] if t in missing else [b], rng) for t, b in enumerate(truth)]
    result = track_shot("shot-0002", 0, frames, TrackerParams())
    assert len(result.tracks) == 1
    track = result.tracks[0]
    assert track.frames == FrameRange(0, n)
    for o in track.observations:
        assert o.source == ("interpolated" if o.frame in missing else "detected")
    ious = np.diag(box_iou(boxes_of(track), np.array(truth)))
    assert ious[sorted(missing)].min() >= 0.6
    # Landmarks are interpolated too, between the neighbouring detections.
    assert all(track.at(f).landmarks is not None for f in missing)  # type: ignore[union-attr]


def test_face_entering_and_leaving() -> None:
    rng = np.random.default_rng(4)
    frames = [detections([face_box(300 + 2 * t, 300, 100)] if 20 <= t < 50 else [], rng) for t in range(80)]
    result = track_shot("shot-0007", 0, frames, TrackerParams())
    assert [t.frames for t in result.tracks] == [FrameRange(20, 50)]


def test_gap_longer_than_max_gap_ends_the_track_at_its_last_detection() -> None:
    rng = np.random.default_rng(5)
    params = TrackerParams(max_gap=10)
    frames = [detections([] if 30 <= t < 45 else [face_box(400, 300, 100)], rng) for t in range(80)]
    result = track_shot("s", 0, frames, params)
    assert [t.frames for t in result.tracks] == [FrameRange(0, 30), FrameRange(45, 80)]
    assert [t.id for t in result.tracks] == ["s/face-01", "s/face-02"]
    assert all(o.source == "detected" for t in result.tracks for o in t.observations)
    # A gap of exactly max_gap frames is bridged.
    frames = [detections([] if 30 <= t < 40 else [face_box(400, 300, 100)], rng) for t in range(80)]
    result = track_shot("s", 0, frames, params)
    assert [t.frames for t in result.tracks] == [FrameRange(0, 80)]


def test_no_detections_no_tracks() -> None:
    assert track_shot("s", 0, [], TrackerParams()).tracks == ()
    result = track_shot("s", 10, (Detections.empty() for _ in range(30)), TrackerParams())
    assert result.tracks == () and result.dropped == () and result.frames == FrameRange(10, 40)


def test_short_and_small_tracks_are_dropped_with_reasons() -> None:
    rng = np.random.default_rng(6)
    frames = []
    for t in range(60):
        boxes = [face_box(300, 300, 120)]  # kept
        if 10 <= t < 14:
            boxes.append(face_box(900, 300, 120))  # 4 frames
        boxes.append(face_box(600, 500, 16))  # tiny, whole shot
        if t == 30:
            boxes.append(face_box(1100, 600, 100))  # a single false positive
        frames.append(detections(boxes, rng, noise=0.5))
    params = TrackerParams(min_track_frames=8, min_face_size=32, min_hits=2)
    result = track_shot("shot-0009", 0, frames, params)
    assert [(t.id, t.frames) for t in result.tracks] == [("shot-0009/face-01", FrameRange(0, 60))]
    reasons = {d.track.frames: d.reason for d in result.dropped}
    assert reasons[FrameRange(10, 14)] == "too short: 4 frames < min_track_frames=8"
    assert reasons[FrameRange(0, 60)].startswith("too small: median box height 16.")
    assert reasons[FrameRange(0, 60)].endswith("< min_face_size=32")
    assert reasons[FrameRange(30, 31)].startswith("unconfirmed: 1 consecutive detections < min_hits=2")
    dicts = result.dropped_dicts()
    assert {d["reason"] for d in dicts} == set(reasons.values())
    assert all(d["id"].startswith("shot-0009/dropped-") for d in dicts)
    json.dumps(dicts)


def test_invalid_rows_are_skipped_and_bad_shapes_rejected() -> None:
    good = face_box(300, 300, 100)
    frames = [
        Detections(np.array([good, [np.nan, 0, 1, 1], [5, 5, 5, 9]]), np.array([0.9, 0.9, 0.9]), np.zeros((3, 5, 2)) + 300)
        for _ in range(10)
    ]
    result = track_shot("s", 0, frames, TrackerParams())
    assert len(result.tracks) == 1 and result.skipped_detections == 20
    # Detections validates its shapes; the tracker also checks duck-typed input.
    bad = SimpleNamespace(boxes=np.zeros((2, 3)), scores=np.zeros(2), landmarks=np.zeros((2, 5, 2)))
    with pytest.raises(ValueError, match="frame 0"):
        track_shot("s", 0, [bad], TrackerParams())  # type: ignore[list-item]


def test_tracker_consumes_lazily() -> None:
    """Frame i's detections are requested only after frame i-1's were consumed."""
    consumed = []

    def stream() -> Iterator[Detections]:
        for t in range(20):
            consumed.append(t)
            yield detections([face_box(300, 300, 100)])

    result = track_shot("s", 0, stream(), TrackerParams())
    assert consumed == list(range(20)) and result.tracks[0].frames == FrameRange(0, 20)


# --------------------------------------------------------------------------- faces.json


def test_faces_json_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(7)
    fps = Fraction(24000, 1001)
    shot1 = Shot("shot-0001", 0, FrameRange(0, 40), fps)
    res1 = track_shot(shot1.id, 0, (detections([face_box(300, 300, 100)], rng) for _ in range(40)), TrackerParams())
    # A hand-made record at the file's precision round-trips exactly.
    exact = FaceTrack(
        "shot-0002/face-01",
        "shot-0002",
        FrameRange(45, 47),
        (
            FaceObservation(45, (1.5, 2.25, 101.125, 130.0), tuple((float(i), 2.5) for i in range(5)), 0.98765, "detected"),
            FaceObservation(46, (1.5, 2.25, 101.125, 130.0), None, 0.5, "interpolated"),
        ),
    )
    path = tmp_path / "work" / "faces.json"
    write_faces(
        path,
        source="film.mov",
        fps=fps,
        frame_count=100,
        shots=[shot1, ("shot-0002", FrameRange(40, 70)), {"id": "shot-0003", "frames": [70, 100]}],
        tracks=[*res1.tracks, exact],
        dropped=res1.dropped_dicts(),
        params={"tracker": TrackerParams().to_dict()},
    )
    raw = json.loads(path.read_text())
    assert list(raw)[0] == "schema" and raw["schema"] == schema_tag("faces") == "dub-film/faces@1"
    assert [s["id"] for s in raw["shots"]] == ["shot-0001", "shot-0002", "shot-0003"]
    assert raw["shots"][0]["tracks"][0]["observations"][0].keys() >= {"frame", "box", "landmarks", "score", "source"}

    faces = read_faces(path)
    assert isinstance(faces, FacesFile)
    assert faces.fps == fps and faces.frame_count == 100 and faces.source == "film.mov"
    assert faces.shot("shot-0002").tracks == (exact,)
    assert faces.shot("shot-0003").tracks == ()
    assert faces.tracks == (*(FaceTrack.from_dict(t.to_dict()) for t in res1.tracks), exact)
    got, want = boxes_of(faces.tracks[0]), boxes_of(res1.tracks[0])
    assert np.abs(got - want).max() <= 5e-4
    assert faces.params["tracker"]["max_gap"] == TrackerParams().max_gap
    assert list(faces.dropped) == res1.dropped_dicts()


def test_faces_json_rejects_inconsistent_layout(tmp_path) -> None:
    track = FaceTrack("s1/face-01", "s1", FrameRange(5, 6), (FaceObservation(5, (0.0, 0.0, 10.0, 10.0), None, 0.9),))
    with pytest.raises(ValueError, match="not inside shot"):
        write_faces(tmp_path / "f.json", source="x", fps=25, frame_count=10, shots=[("s1", FrameRange(0, 5))], tracks=[track], dropped=[], params={})
    with pytest.raises(ValueError, match="not among the shots"):
        write_faces(tmp_path / "f.json", source="x", fps=25, frame_count=10, shots=[("s2", FrameRange(0, 10))], tracks=[track], dropped=[], params={})
    assert not (tmp_path / "f.json").exists()
    path = tmp_path / "ok.json"
    write_faces(path, source="x", fps=25, frame_count=10, shots=[("s1", FrameRange(0, 10))], tracks=[track], dropped=[], params={})
    data = json.loads(path.read_text())
    data["shots"][0]["tracks"][0]["frames"] = [5, 7]  # one observation for two frames
    path.write_text(json.dumps(data))
    with pytest.raises(SchemaError, match="ok.json"):
        read_faces(path)
    data["schema"] = "dub-film/shots@1"
    path.write_text(json.dumps(data))
    with pytest.raises(SchemaError, match="expected 'faces'"):
        read_faces(path)
