"""Casting on real talking heads (../shared/data/talking-heads), as a studio would run it.

* Each clip (one woman speaking to camera, 8 s, 25 fps) dubbed with a foreign-language
  track padded / trimmed to the picture: exactly one face is driven, in at least 90%
  of the frames where she speaks in the original (truth: an energy VAD on the
  original soundtrack, not the code under test), and no other track is driven.
* The two clips side by side, taking turns (left speaks 0-8 s, right 8-16 s), one
  dubbed stem per character laid over each turn: each voice drives the right face
  in its turn and not in the other's; a third, false box injected into faces.json
  (a patch of background) is never driven.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from typer.testing import CliRunner

from conftest import LIGHT_ASD, MOBILENET, shared
from determinism import one_torch_thread  # noqa: F401  (autouse: one torch thread)
from dub.cli import app

runner = CliRunner()
SR = 16000
FPS = 25
SPF = SR // FPS
CLIPS = {"WDA_AlexandriaOcasioCortez_000.mp4": "deyu.wav", "WDA_KatieHill_000.mp4": "fayu.wav"}




@pytest.fixture(scope="module", autouse=True)
def _weights():
    if not (MOBILENET.exists() and LIGHT_ASD.exists()):
        pytest.skip("RetinaFace / Light-ASD weights missing from ../shared/data/weights")


def vad_frames(audio: np.ndarray, frame_count: int) -> np.ndarray:
    from lipsync.speakers.activity import speech_spans

    mask = np.zeros(frame_count, bool)
    for a, b in speech_spans(audio, SR):
        mask[a // SPF : min(frame_count, -(-b // SPF))] = True
    return mask


def drive_mask(drive: dict, frame_count: int) -> np.ndarray:
    mask = np.zeros(frame_count, bool)
    for a, b in drive["speaking"]:
        mask[a:b] = True
    return mask


def write_job(folder: Path, film: Path, dub: dict, options: dict | None = None, casting: dict | None = None) -> Path:
    body = {"schema": "dub-film/manifest@1", "film": str(film), "dub": dub,
            "options": {"audio_length_policy": "pad", **(options or {})}}
    if casting:
        body["casting"] = casting
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return path


def match(job: Path, out: Path, model_store: Path, *extra: str) -> dict:
    res = runner.invoke(app, ["match", str(job), "--out", str(out), "--store", str(model_store), *extra])
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text())


@pytest.fixture(scope="module", params=sorted(CLIPS))
def single(request, tmp_path_factory, model_store):
    from lipsync.media.audio import load_audio

    clip = shared("talking-heads", request.param)
    dub = shared("talking-heads", CLIPS[request.param])
    folder = tmp_path_factory.mktemp("head")
    job = write_job(folder, clip, {"language": "de", "dialogue": str(dub)})
    data = match(job, folder / "speakers.json", model_store)
    faces = json.loads((folder / "faces.json").read_text())
    frame_count = faces["frame_count"]
    truth = vad_frames(load_audio(clip, SR), frame_count)
    return {"data": data, "faces": faces, "truth": truth, "frame_count": frame_count, "folder": folder, "clip": clip}


def test_one_face_is_driven_wherever_she_speaks(single):
    data, truth, n = single["data"], single["truth"], single["frame_count"]
    assert truth.sum() > 0.5 * n  # she talks through most of the clip
    (drive,) = data["drives"]
    covered = float(drive_mask(drive, n)[truth].mean())
    assert covered >= 0.9, (covered, drive["speaking"])
    decisions = {d["track"]: d for d in data["decisions"]}
    assert decisions[drive["track"]]["driven"] and decisions[drive["track"]]["confidence"] > 0
    others = [d for t, d in decisions.items() if t != drive["track"]]
    assert not any(d["driven"] for d in others)
    # The one on-screen character is dubbed; nobody else is.
    on_screen = [c for c in data["characters"] if c["on_screen"]]
    assert len(on_screen) == 1 and on_screen[0]["voice"] is not None


def test_every_track_has_a_decision_with_a_reason(single):
    tracks = {t["id"] for s in single["faces"]["shots"] for t in s["tracks"]}
    decisions = {d["track"]: d for d in single["data"]["decisions"]}
    assert set(decisions) == tracks
    assert all(d["reason"] and 0.0 <= d["confidence"] <= 1.0 for d in decisions.values())


# --------------------------------------------------------------------------- two people taking turns


def _cut(path: Path, seconds: float) -> np.ndarray:
    from lipsync.media.audio import load_audio

    return load_audio(path, SR)[: int(seconds * SR)]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from lipsync.media.synth import make_dialogue_scene

    left, right = shared("talking-heads", "WDA_AlexandriaOcasioCortez_000.mp4"), shared("talking-heads", "WDA_KatieHill_000.mp4")
    folder = tmp_path_factory.mktemp("heads-scene")
    made = make_dialogue_scene(folder / "scene.mkv", {"left": left, "right": right}, [("left", left), ("right", right)])
    total = made.frame_count * SPF
    for name, turn, speech in (("alice", made.turns[0], "deyu.wav"), ("bob", made.turns[1], "fayu.wav")):
        data = np.zeros(total, np.float32)
        start, end = turn.frames[0] * SPF, turn.frames[1] * SPF
        voice = _cut(shared("talking-heads", speech), (end - start) / SR - 0.3)
        data[start : start + len(voice)] = voice
        sf.write(str(folder / f"{name}.wav"), data, SR, subtype="PCM_16")
    return made


@pytest.fixture(scope="module")
def scene_matched(scene, tmp_path_factory, model_store):
    folder = tmp_path_factory.mktemp("heads-match")
    dub = {"language": "de", "characters": [{"name": n, "path": str(scene.path.parent / f"{n.lower()}.wav")} for n in ("ALICE", "BOB")]}
    job = write_job(folder, scene.path, dub)
    data = match(job, folder / "speakers.json", model_store)
    faces = json.loads((folder / "faces.json").read_text())
    width = 1024
    side = {}
    for t in (t for s in faces["shots"] for t in s["tracks"]):
        x1, _, x2, _ = t["observations"][len(t["observations"]) // 2]["box"]
        side.setdefault("left" if (x1 + x2) / 2 < width / 2 else "right", t["id"])
    return {"folder": folder, "job": job, "data": data, "faces": faces, "side": side}


def _turn_truth(scene, which: str, frame_count: int) -> np.ndarray:
    mask = np.zeros(frame_count, bool)
    for t in scene.turns:
        if t.side == which:
            for a, b in t.speech:
                mask[a // SPF : min(frame_count, -(-b // SPF))] = True
    return mask


def test_each_voice_drives_the_face_whose_turn_it_is(scene, scene_matched):
    data, side = scene_matched["data"], scene_matched["side"]
    n = scene.frame_count
    assert set(side) == {"left", "right"}
    drives = {d["track"]: d for d in data["drives"]}
    assert drives[side["left"]]["voice"] == "ALICE" and drives[side["right"]]["voice"] == "BOB"
    for who, other in (("left", "right"), ("right", "left")):
        mine = drive_mask(drives[side[who]], n)
        assert mine[_turn_truth(scene, who, n)].mean() >= 0.9
        assert mine[_turn_truth(scene, other, n)].mean() <= 0.1


def test_an_injected_false_box_is_never_driven(scene, scene_matched, model_store, tmp_path):
    """A third track over a patch of background (not a face) added to faces.json: scored, decided, never driven."""
    folder, faces = scene_matched["folder"], scene_matched["faces"]
    shot = faces["shots"][0]
    a, b = shot["frames"]
    box = [12.0, 12.0, 112.0, 132.0]  # top-left corner of the left picture: wall behind her
    lms = [[42.0, 52.0], [82.0, 52.0], [62.0, 77.0], [47.0, 102.0], [77.0, 102.0]]
    fake = {"id": f"{shot['id']}/face-09", "shot_id": shot["id"], "frames": [a, b],
            "observations": [{"frame": f, "box": box, "landmarks": lms, "score": 0.99, "source": "detected"} for f in range(a, b)]}
    shot["tracks"].append(fake)
    edited = tmp_path / "faces.json"
    edited.write_text(json.dumps(faces), encoding="utf-8")
    data = match(scene_matched["job"], tmp_path / "speakers.json", model_store, "--faces", str(edited),
                 "--shots", str(folder / "shots.json"), "--rttm", str(folder / "original.rttm"))
    driven = {d["track"] for d in data["drives"]}
    assert fake["id"] not in driven
    assert driven == {scene_matched["side"]["left"], scene_matched["side"]["right"]}
    decision = next(d for d in data["decisions"] if d["track"] == fake["id"])
    assert decision["driven"] is False and "not driven" in decision["reason"] or "not cast" in decision["reason"]


def test_dub_run_renders_exactly_the_speaking_face(tmp_path, model_store):
    """`dub run` with random Wav2Lip weights (published format) on one talking head dubbed in French:
    the report drives one face, rendered, over the frames where she speaks."""
    import torch

    from lipsync.media.audio import load_audio
    from lipsync.models.wav2lip import Wav2Lip

    clip, dub = shared("talking-heads", "WDA_KatieHill_000.mp4"), shared("talking-heads", "fayu.wav")
    torch.manual_seed(0)
    ckpt = tmp_path / "wav2lip.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in Wav2Lip().state_dict().items()}}, ckpt)
    job = write_job(tmp_path, clip, {"language": "fr", "dialogue": str(dub)},
                    options={"lipsync_checkpoint": str(ckpt), "lipsync_backend": "local", "lipsync_device": "cpu",
                             "qc": "off", "cache": False})
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(job), "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    (shot,) = report["shots"]
    (drive,) = shot["drives"]
    speakers = json.loads((out / "speakers.json").read_text())
    n = report["output"]["frame_count"]
    truth = vad_frames(load_audio(clip, SR), n)
    mask = drive_mask(next(d for d in speakers["drives"] if d["track"] == drive["track"]), n)
    assert mask[truth].mean() >= 0.9
    assert shot["status"] == "rendered"
