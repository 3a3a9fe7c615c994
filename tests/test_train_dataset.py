"""`dub train dataset` on real footage: GRID sentences and the two-face composite.

The set is built once per session (fixture ``built_dataset`` in conftest.py) from
``grid_two_face_turns.mp4`` (left face speaks 1.00-2.46 s, right face 3.68-5.32 s),
``bbaf2n.mpg``, ``lwbsza.mpg``, ``lbax4n.mpg`` and ``id2_vcd_swwp2s.mpg``, with ``lwbsza`` as
the validation film.  The
composite's faces are the speakers of ``bbaf2n`` (left) and ``lwbsza`` (right); the
``--names`` file says so, so the composite's right face must land in validation too.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from conftest import psnr, shared
from determinism import deterministic_torch  # noqa: F401  (autouse: one thread, deterministic kernels, seeds)
from dub.cli import app
from lipsync.faces.facesfile import read_faces
from lipsync.speakers.asd import read_asd
from lipsync.train.data import TrainingSet

COMPOSITE = "grid_two_face_turns"
TURNS = {"left": (1.00, 2.46), "right": (3.68, 5.32)}  # seconds, from grid_two_face_turns.json


def _clips(ds: TrainingSet, film: str) -> list:
    return [c for c in ds.clips if c.film == film]


def _decode_16k(path: Path) -> np.ndarray:
    """The film's audio as ffmpeg alone makes it: default resampler, mono, 16-bit."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", "16000", "-f", "s16le", "-"],
                         check=True, capture_output=True).stdout
    return np.frombuffer(raw, "<i2").astype(np.float64)


def test_clips_hold_exactly_the_active_speaker_frames(built_dataset: Path) -> None:
    ds = TrainingSet(built_dataset)
    doc = ds.doc
    assert doc["schema"] == "dub-film/dataset@1" and doc["fps"] == 25 and doc["sample_rate"] == 16000
    for film in doc["films"]:
        name = film["name"]
        asd = read_asd(built_dataset / "films" / f"{name}.asd.json")
        faces = read_faces(built_dataset / "films" / f"{name}.faces.json")
        assert {t.id for t in faces.tracks} == {t.track_id for t in asd.tracks}
        # The reference, computed frame by frame with the ASD stage's own rule (AsdResult.speaker_at).
        want: dict[str, set[int]] = {t.id: set() for t in faces.tracks}
        for f in range(asd.frame_count):
            who = asd.speaker_at(f)
            if who is not None:
                want[who].add(f)
        got: dict[str, set[int]] = {t.id: set() for t in faces.tracks}
        for c in _clips(ds, name):
            a, b = c.source["film_frames"]
            assert b - a == c.frames == len(ds.faces(c))  # 25 fps films: one crop per film frame
            assert not got[c.source["track"]] & set(range(a, b))
            got[c.source["track"]] |= set(range(a, b))
        # Every run of the reference is >= 5 frames here (min_clip_frames), so nothing is dropped: equal sets.
        assert got == want, name
        assert film["speaking_frames"] == sum(len(v) for v in want.values())


def test_composite_selection_against_ground_truth(built_dataset: Path) -> None:
    ds = TrainingSet(built_dataset)
    faces = read_faces(built_dataset / "films" / f"{COMPOSITE}.faces.json")
    clips = _clips(ds, COMPOSITE)
    assert len(faces.tracks) == 2 and len(clips) == 2
    for side, (t0, t1) in TURNS.items():
        a_true, b_true = round(t0 * 25), round(t1 * 25)
        (clip,) = [c for c in clips if c.character == f"speaker-{'bbaf2n' if side == 'left' else 'lwbsza'}"]
        track = next(t for t in faces.tracks if t.id == clip.source["track"])
        cx = np.median([(o.box[0] + o.box[2]) / 2 for o in track.observations])
        assert (cx < 360) == (side == "left")
        a, b = clip.source["film_frames"]
        assert a_true - 2 <= a and b <= b_true + 2, (side, a, b)  # nothing outside the turn (2-frame collar)
        recall = (min(b, b_true) - max(a, a_true)) / (b_true - a_true)
        print(f"{side}: clip frames [{a}, {b}), turn [{a_true}, {b_true}), recall {recall:.2f}")
        assert recall >= 0.75


def test_audio_is_aligned_to_the_sample(built_dataset: Path) -> None:
    ds = TrainingSet(built_dataset)
    film = shared("asd-two-face-composite", f"{COMPOSITE}.mp4")
    direct = _decode_16k(film)
    for clip in _clips(ds, COMPOSITE):
        info = sf.info(str(built_dataset / clip.audio))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.frames == clip.frames * 640
        a = clip.source["film_frames"][0]
        assert clip.source["audio_start"] == a * 640  # 25 fps: frame a starts at sample a * 16000 / 25
        wav = ds.audio(clip).astype(np.float64) * 32768
        # One 5-frame window (the expert's) in the middle of the clip, against a direct cut of ffmpeg's audio.
        i = clip.frames // 2
        mine = wav[i * 640:(i + 5) * 640]
        s = clip.source["audio_start"] + i * 640
        lags = range(-40, 41)
        corr = [np.corrcoef(mine, direct[s + k:s + k + len(mine)])[0, 1] for k in lags]
        best = lags[int(np.argmax(corr))]
        print(f"{clip.id}: window of frame {i}: best lag {best} samples, correlation {max(corr):.4f}")
        assert best == 0 and max(corr) > 0.99
        assert np.sqrt(np.mean((mine - direct[s:s + len(mine)]) ** 2)) < 0.02 * np.sqrt(np.mean(mine**2))


def test_crops_are_the_frames_shown(built_dataset: Path) -> None:
    """Each crop is the tracked face of its own film frame: best match among its neighbours, and close."""
    import cv2

    from lipsync.render.blend import crop_box
    from lipsync.render.params import CropParams

    ds = TrainingSet(built_dataset)
    film = shared("asd-two-face-composite", f"{COMPOSITE}.mp4")
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(film), "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
                         check=True, capture_output=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, 288, 720, 3)
    faces = read_faces(built_dataset / "films" / f"{COMPOSITE}.faces.json")
    for clip in _clips(ds, COMPOSITE):
        track = next(t for t in faces.tracks if t.id == clip.source["track"])
        a, _ = clip.source["film_frames"]
        crops = ds.faces(clip)
        assert crops.dtype == np.uint8 and crops.shape == (clip.frames, 96, 96, 3)
        for j in (2, clip.frames // 2, clip.frames - 3):
            f = a + j
            x1, y1, x2, y2 = crop_box(track.at(f).box, CropParams(), (720, 288), even=True)
            scores = {g: psnr(crops[j], cv2.resize(frames[g][y1:y2, x1:x2], (96, 96)))
                      for g in range(f - 2, f + 3)}
            assert max(scores, key=scores.get) == f and scores[f] > 35, (clip.id, j, scores)


def test_split_by_film_and_character(built_dataset: Path) -> None:
    ds = TrainingSet(built_dataset)
    doc = ds.doc
    by_film = {(c.film, c.character): c.split for c in ds.clips}
    assert by_film[("lwbsza", "speaker-lwbsza")] == "val"
    assert by_film[(COMPOSITE, "speaker-lwbsza")] == "val"  # the validation face, seen in another film
    assert by_film[(COMPOSITE, "speaker-bbaf2n")] == "train" and by_film[("bbaf2n", "speaker-bbaf2n")] == "train"
    train_chars = {c.character for c in ds.clips if c.split == "train"}
    val_chars = {c.character for c in ds.clips if c.split == "val"}
    assert train_chars and val_chars and not train_chars & val_chars
    for split in ("train", "val"):
        mine = [c for c in ds.clips if c.split == split]
        frames = sum(c.frames for c in mine)
        assert doc["counts"][split] == {"clips": len(mine), "frames": frames, "characters": len({c.character for c in mine}),
                                        "films": len({c.film for c in mine})}
        assert doc["hours"][split] == pytest.approx(frames / 25 / 3600, abs=1e-6)
    assert doc["counts"]["total"]["frames"] == sum(c.frames for c in ds.clips)
    assert len(TrainingSet(built_dataset, split="val")) == len([c for c in ds.clips if c.split == "val"])


def test_bad_input_is_refused_before_anything_is_written(built_dataset: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    film = str(shared("grid-talking-faces", "bbaf2n.mpg"))
    out = tmp_path / "new"
    r = runner.invoke(app, ["train", "dataset", film, str(tmp_path / "nope.mp4"), "--out", str(out)])
    assert r.exit_code != 0 and "nope.mp4" in r.output and not out.exists()
    r = runner.invoke(app, ["train", "dataset", film, "--out", str(built_dataset)])
    assert r.exit_code != 0 and "not empty" in r.output
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"nosuchfilm": {"character": "x"}}), encoding="utf-8")
    r = runner.invoke(app, ["train", "dataset", film, "--names", str(names), "--out", str(out)])
    assert r.exit_code != 0 and "nosuchfilm" in r.output and not out.exists()
    r = runner.invoke(app, ["train", "dataset", film, "--val", "other", "--out", str(out)])
    assert r.exit_code != 0 and "other" in r.output and not out.exists()
