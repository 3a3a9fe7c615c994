"""Faces through the whole per-shot pipeline (real RetinaFace weights, real videos), against ground truth."""

import json
import subprocess
from fractions import Fraction

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import shared
from dub.cli import app
from dubcore.records import ShotList
from dubcore.timebase import FrameRange
from lipsync.faces.facesfile import read_faces
from lipsync.faces.pipeline import FaceTrackingParams, track_film_faces, track_shot_faces
from lipsync.media import probe
from lipsync.media.synth import make_moving_face
from lipsync.shots import detect_shots

GRID = ["bbaf2n", "brbk7n", "id2_vcd_swwp2s", "lbax4n", "lbbc2a", "lwbsza", "pwij3p", "sbia1a"]
ASTRONAUT_FACE = (179.0, 55.0, 270.0, 178.0)  # the face in the 512x512 photo (SOURCE.txt reference box)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def whole(path) -> ShotList:
    v = probe(path).require_video()
    return ShotList.from_cuts(str(path), v.fps, v.frame_count, [])


@pytest.mark.parametrize("clip", GRID)
def test_grid_every_frame_one_track_containing_the_mouth(face_detector, clip):
    path = shared("grid-talking-faces", f"{clip}.mpg")
    shots = whole(path)
    (result,) = track_film_faces(path, shots, face_detector)
    assert len(result.tracks) == 1, [t.id for t in result.tracks]
    track = result.tracks[0]
    assert track.frames == FrameRange(0, 75)
    for obs in track.observations:
        x1, y1, x2, y2 = obs.box
        for x, y in obs.landmarks[3:5]:  # mouth corners
            assert x1 <= x <= x2 and y1 <= y <= y2, (obs.frame, obs.box, obs.landmarks)


def test_two_face_composite_two_tracks_one_per_half(face_detector):
    path = shared("asd-two-face-composite", "grid_two_face_turns.mp4")
    (result,) = track_film_faces(path, whole(path), face_detector)
    assert len(result.tracks) == 2
    left, right = result.tracks  # ordered by x of the first box
    assert left.frames == right.frames == FrameRange(0, 150)
    assert all((o.box[0] + o.box[2]) / 2 < 360 for o in left.observations)
    assert all((o.box[0] + o.box[2]) / 2 > 360 for o in right.observations)


@pytest.fixture(scope="module")
def astronaut():
    return cv2.imread(str(shared("face-photos", "astronaut.png")))


def test_moving_face_follows_the_true_box(tmp_path, face_detector, astronaut):
    shot = make_moving_face(tmp_path / "move.mp4", astronaut, ASTRONAUT_FACE, frames=80)
    (result,) = track_film_faces(shot.path, whole(shot.path), face_detector)
    assert len(result.tracks) == 1 and result.tracks[0].frames == FrameRange(0, 80)
    ious = [iou(o.box, t) for o, t in zip(result.tracks[0].observations, shot.truth)]
    assert np.mean(ious) >= 0.8, np.mean(ious)


def test_moving_face_survives_blanked_frames(tmp_path, face_detector, astronaut):
    blank = frozenset(range(5, 80, 10))  # 8 of 80 frames: 10%
    shot = make_moving_face(tmp_path / "blank.mp4", astronaut, ASTRONAUT_FACE, frames=80, blank=blank)
    (result,) = track_film_faces(shot.path, whole(shot.path), face_detector)
    assert len(result.tracks) == 1, [t.id for t in result.tracks]
    track = result.tracks[0]
    assert track.frames == FrameRange(0, 80)
    for f in blank:
        obs = track.at(f)
        assert obs.source == "interpolated"
        assert iou(obs.box, shot.truth[f]) >= 0.6, (f, obs.box, shot.truth[f])


def test_shot_without_faces_gives_no_track(tmp_path, face_detector):
    path = tmp_path / "empty.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "color=c=0x406080:s=320x240:r=25:d=2,noise=alls=20:allf=t", "-c:v", "libx264", str(path)], check=True)
    (result,) = track_film_faces(path, whole(path), face_detector)
    assert result.tracks == () and result.dropped == ()


def test_cut_that_swaps_two_faces_gives_separate_tracks_per_shot(tmp_path, face_detector):
    a, b = shared("grid-talking-faces", "bbaf2n.mpg"), shared("grid-talking-faces", "lwbsza.mpg")
    path = tmp_path / "swap.mp4"
    graph = ("[0:v]trim=end_frame=40,setpts=PTS-STARTPTS[a0];[1:v]trim=end_frame=40,setpts=PTS-STARTPTS[b0];"
             "[0:v]trim=start_frame=40:end_frame=75,setpts=PTS-STARTPTS[a1];[1:v]trim=start_frame=40:end_frame=75,setpts=PTS-STARTPTS[b1];"
             "[a0][b0]hstack[s0];[b1][a1]hstack[s1];[s0][s1]concat=n=2:v=1:a=0,format=yuv420p[v]")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(a), "-i", str(b), "-filter_complex", graph,
                    "-map", "[v]", "-c:v", "libx264", "-crf", "16", str(path)], check=True)
    shots = ShotList.from_cuts(str(path), Fraction(25), 75, [40])
    results = track_film_faces(path, shots, face_detector)
    assert [len(r.tracks) for r in results] == [2, 2]
    for shot, r in zip(shots, results):
        for t in r.tracks:
            assert t.shot_id == shot.id and t.frames == shot.frames


def test_dub_faces_cli_writes_faces_json_and_render(tmp_path, model_store):
    path = shared("asd-two-face-composite", "grid_two_face_turns.mp4")
    out = tmp_path / "faces.json"
    result = CliRunner().invoke(app, ["faces", str(path), "--out", str(out), "--store", str(model_store),
                                      "--render", str(tmp_path / "tracks.mp4")])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["schema"] == "dub-film/faces@1"
    faces = read_faces(out)
    assert [t.id for t in faces.tracks] == ["shot-0001/face-01", "shot-0001/face-02"]
    assert {o.source for t in faces.tracks for o in t.observations} <= {"detected", "smoothed", "interpolated"}
    assert probe(tmp_path / "tracks.mp4").require_video().frame_count == 150


def test_missing_weights_error_names_entry_path_and_command(tmp_path):
    path = shared("asd-two-face-composite", "grid_two_face_turns.mp4")
    result = CliRunner().invoke(app, ["faces", str(path), "--out", str(tmp_path / "f.json"), "--store", str(tmp_path / "empty")])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "retinaface_mobilenet0.25" in text and "dub models pull retinaface_mobilenet0.25" in text
    assert str(tmp_path / "empty") in text
    assert not (tmp_path / "f.json").exists()
