"""Casting on a generated two-character scene with known turns, through `dub match` and the whole flow.

The scene (built here from real GRID recordings, 25 fps, 720x288, 12 s, one shot):

    turn 1  0-3 s   the LEFT man speaks (pwij3p), the right woman idles
    turn 2  3-6 s   the RIGHT woman speaks (lwbsza), the left man idles
    turn 3  6-9 s   the LEFT man speaks again
    turn 4  9-12 s  a third voice (brbk7n) speaks OFF SCREEN; both faces idle

The dub has one stem per character, with other GRID speakers' sentences laid
where the original lines are: ALICE at turns 1 and 3, BOB at turn 2, NARRATOR
at turn 4.  The truth of each turn's speech comes from an energy VAD on its
source clip, not from the code under test's diarization.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from conftest import LIGHT_ASD, psnr, shared
from dub.cli import app
from dubcore.records import SpeakerTurn

runner = CliRunner()
FPS = 25
SR = 16000
SPF = SR // FPS  # samples per frame


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    if not LIGHT_ASD.exists():
        pytest.skip(f"Light-ASD weights missing: {LIGHT_ASD}")
    from lipsync.media.synth import make_dialogue_scene, place_speech

    folder = tmp_path_factory.mktemp("scene")
    grid = lambda name: shared("grid-talking-faces", name)  # noqa: E731
    made = make_dialogue_scene(
        folder / "scene.mkv",
        {"left": grid("pwij3p.mpg"), "right": grid("lwbsza.mpg")},
        [("left", grid("pwij3p.mpg")), ("right", grid("lwbsza.mpg")), ("left", grid("pwij3p.mpg")), (None, grid("brbk7n.mpg"))],
    )
    total = made.frame_count * SPF
    starts = [t.frames[0] * SPF for t in made.turns]
    place_speech(folder / "alice.wav", total, SR, [(starts[0], grid("sbia1a.mpg")), (starts[2], grid("sbia1a.mpg"))])
    place_speech(folder / "bob.wav", total, SR, [(starts[1], grid("lbax4n.mpg"))])
    place_speech(folder / "narrator.wav", total, SR, [(starts[3], grid("bbaf2n.mpg"))])
    return made


def manifest(folder: Path, scene, *, casting=None, options=None) -> Path:
    body = {
        "schema": "dub-film/manifest@1",
        "film": str(scene.path),
        "dub": {"characters": [{"name": n, "path": str(scene.path.parent / f"{n.lower()}.wav")} for n in ("ALICE", "BOB", "NARRATOR")]},
        "options": options or {},
    }
    if casting:
        body["casting"] = casting
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def speech_frames(scene, side) -> list[np.ndarray]:
    """Per turn of ``side``: the frames of its speech (from the VAD truth)."""
    return [np.arange(a // SPF, -(-b // SPF)) for t in scene.turns if t.side == side for a, b in t.speech]


def covered(ranges, frames: np.ndarray) -> float:
    mask = np.zeros(int(frames.max()) + 1, bool)
    for a, b in ranges:
        mask[a : min(b, len(mask))] = True
    return float(mask[frames].mean())


@pytest.fixture(scope="module")
def matched(scene, tmp_path_factory, model_store):
    folder = tmp_path_factory.mktemp("match")
    m = manifest(folder, scene)
    res = runner.invoke(app, ["match", str(m), "--out", str(folder / "speakers.json"), "--store", str(model_store)])
    assert res.exit_code == 0, res.output
    data = json.loads((folder / "speakers.json").read_text())
    faces = json.loads((folder / "faces.json").read_text())
    side_of = {}
    for t in (t for s in faces["shots"] for t in s["tracks"]):
        x1, _, x2, _ = t["observations"][0]["box"]
        side_of["left" if (x1 + x2) / 2 < 360 else "right"] = t["id"]
    return {"folder": folder, "data": data, "side": side_of, "output": res.output}


def test_the_scene_is_what_it_says(scene):
    assert scene.frame_count == 300 and [t.frames for t in scene.turns] == [(0, 75), (75, 150), (150, 225), (225, 300)]
    assert all(len(t.speech) == 1 for t in scene.turns)


def test_match_writes_every_intermediate_beside_speakers_json(matched):
    folder = matched["folder"]
    for name in ("speakers.json", "shots.json", "faces.json", "asd.json", "original.rttm"):
        assert (folder / name).exists(), name
    assert json.loads((folder / "speakers.json").read_text())["schema"] == "dub-film/speakers@1"
    assert len(matched["side"]) == 2


def test_original_diarization_finds_the_three_voices(matched, scene):
    from lipsync.speakers.rttm import der, read_rttm

    truth = [SpeakerTurn(f"t{i}", str(t.side), a, b, SR) for i, t in enumerate(scene.turns) for a, b in t.speech]
    turns = read_rttm(matched["folder"] / "original.rttm", SR)
    assert len({t.speaker for t in turns}) == 3
    assert der(truth, turns, uem=(0.0, 12.0)) < 0.15


def test_each_stem_drives_the_right_face_in_every_turn(matched, scene):
    data, side = matched["data"], matched["side"]
    drives = {d["track"]: d for d in data["drives"]}
    assert drives[side["left"]]["voice"] == "ALICE" and drives[side["right"]]["voice"] == "BOB"
    for who, frames_of_turns in (("left", speech_frames(scene, "left")), ("right", speech_frames(scene, "right"))):
        mine = drives[side[who]]["speaking"]
        for frames in frames_of_turns:
            assert covered(mine, frames) >= 0.9, (who, mine, frames.min(), frames.max())
        other = "right" if who == "left" else "left"
        for frames in speech_frames(scene, other):  # never re-voiced while the other one talks
            assert covered(mine, frames) <= 0.1, (who, mine)
    # One character id for the man across his two turns.
    links = [l for l in data["track_links"] if l["track"] == side["left"]]
    assert len(links) == 1 and len(links[0]["speaking"]) == 2


def test_the_offscreen_voice_is_reported_and_drives_no_face(matched, scene):
    data = matched["data"]
    narrator = next(v for v in data["voice_links"] if v["role"] == "NARRATOR")
    assert data["off_screen"] == [narrator["speaker"]]
    character = next(c for c in data["characters"] if c["id"] == narrator["speaker"])
    assert character["on_screen"] is False and character["tracks"] == []
    assert all(d["voice"] != "NARRATOR" for d in data["drives"])
    # Nobody's lips move in the off-screen turn.
    (frames,) = speech_frames(scene, None)
    for d in data["drives"]:
        assert covered(d["speaking"], frames) <= 0.05
    assert any("never on screen" in n and narrator["speaker"] in n for n in data["notes"])


def test_swapped_names_in_the_manifest_are_obeyed(matched, scene, model_store, tmp_path):
    data, side, folder = matched["data"], matched["side"], matched["folder"]
    speaker = {l["track"]: l["speaker"] for l in data["track_links"]}
    left, right = speaker[side["left"]], speaker[side["right"]]
    m = manifest(tmp_path, scene, casting={"voices": {"ALICE": right, "BOB": left}})
    args = ["match", str(m), "--out", str(tmp_path / "speakers.json"), "--store", str(model_store),
            "--shots", str(folder / "shots.json"), "--faces", str(folder / "faces.json"), "--asd", str(folder / "asd.json"),
            "--rttm", str(folder / "original.rttm")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    swapped = json.loads((tmp_path / "speakers.json").read_text())
    drives = {d["track"]: d["voice"] for d in swapped["drives"]}
    assert drives == {side["left"]: "BOB", side["right"]: "ALICE"}
    sources = {v["role"]: v["source"] for v in swapped["voice_links"]}
    assert sources["ALICE"] == sources["BOB"] == "override" and sources["NARRATOR"] == "overlap"


def test_an_override_naming_an_unknown_speaker_is_refused(matched, scene, model_store, tmp_path):
    folder = matched["folder"]
    m = manifest(tmp_path, scene, casting={"voices": {"ALICE": "SPK09"}})
    res = runner.invoke(app, ["match", str(m), "--out", str(tmp_path / "speakers.json"), "--store", str(model_store),
                              "--shots", str(folder / "shots.json"), "--faces", str(folder / "faces.json"),
                              "--asd", str(folder / "asd.json"), "--rttm", str(folder / "original.rttm")])
    assert res.exit_code == 2
    assert "job.yaml" in res.output and "SPK09" in res.output and "SPK00" in res.output
    assert not (tmp_path / "speakers.json").exists()


def test_a_face_override_to_none_is_never_lipsynced(matched, scene, model_store, tmp_path):
    folder, side = matched["folder"], matched["side"]
    m = manifest(tmp_path, scene, casting={"tracks": {side["right"]: None}})
    res = runner.invoke(app, ["match", str(m), "--out", str(tmp_path / "speakers.json"), "--store", str(model_store),
                              "--shots", str(folder / "shots.json"), "--faces", str(folder / "faces.json"),
                              "--asd", str(folder / "asd.json"), "--rttm", str(folder / "original.rttm")])
    assert res.exit_code == 0, res.output
    drives = {d["track"]: d["voice"] for d in json.loads((tmp_path / "speakers.json").read_text())["drives"]}
    assert drives == {side["left"]: "ALICE"}


def _face_psnr(a_path: Path, b_path: Path, frames: np.ndarray, box: tuple[int, int, int, int]) -> float:
    from lipsync.media.frames import FrameReader

    x1, y1, x2, y2 = box
    wanted = set(int(f) for f in frames)
    worst = float("inf")
    with FrameReader(a_path) as ra, FrameReader(b_path) as rb:
        for i, (fa, fb) in enumerate(zip(ra, rb)):
            if i in wanted:
                worst = min(worst, psnr(fa[y1:y2, x1:x2], fb[y1:y2, x1:x2]))
    return worst


def test_the_flow_lipsyncs_each_face_with_its_own_voice_only(matched, scene, tmp_path):
    """`dub run` with random Wav2Lip weights (published format): the man's mouth is re-drawn during his
    turns and not during hers; the off-screen turn leaves both faces as they were."""
    import torch

    from lipsync.models.wav2lip import Wav2Lip

    torch.manual_seed(0)
    ckpt = tmp_path / "wav2lip.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in Wav2Lip().state_dict().items()}}, ckpt)
    m = manifest(tmp_path, scene, options={"lipsync_checkpoint": str(ckpt), "lipsync_backend": "local", "lipsync_device": "cpu",
                                           "video_codec": "ffv1", "container": "mkv"})
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(m), "--out", str(out)])
    assert res.exit_code == 0, res.output[-3000:]
    report = json.loads((out / "report.json").read_text())
    for name in ("speakers.json", "original.rttm", "asd.json"):
        assert (out / name).exists(), name
    side = matched["side"]
    (shot,) = report["shots"]
    drives = {d["track"]: d for d in shot["drives"]}
    assert drives[side["left"]]["voice"] == "ALICE" and drives[side["right"]]["voice"] == "BOB"
    rendered = {t["id"]: t["synthesized"] for t in shot["tracks"]}
    assert rendered == {tid: d["frames"] for tid, d in drives.items()}
    assert report["speakers"]["off_screen"] and report["transcription"]["status"] == "not run"
    film = out / "film.dubbed.mkv"
    left_box, right_box = (60, 40, 300, 288), (420, 40, 660, 288)
    his = np.concatenate(speech_frames(scene, "left"))
    hers = np.concatenate(speech_frames(scene, "right"))
    (offscreen,) = speech_frames(scene, None)
    inner = lambda f: f[3:-3]  # noqa: E731  (away from the padded edges of the drive ranges)
    assert _face_psnr(scene.path, film, inner(hers), left_box) > 45  # his face untouched while she talks
    assert _face_psnr(scene.path, film, inner(his), right_box) > 45  # hers untouched while he talks
    assert _face_psnr(scene.path, film, offscreen, left_box) > 45 and _face_psnr(scene.path, film, offscreen, right_box) > 45
    assert _face_psnr(scene.path, film, inner(his), left_box) < 35  # random weights: his mouth is re-drawn
    # QC of the delivered film: both re-voiced faces measured (Light-ASD only: no SyncNet weights in the store).
    qc = json.loads((out / "qc" / "report.json").read_text())
    (qshot,) = qc["shots"]
    assert sorted(t["track"] for t in qshot["tracks"]) == sorted(drives)
    assert all(t["lse"] is None and len(t["asd"]["curve"]) == 31 for t in qshot["tracks"])
    assert any("SyncNet weights unavailable" in n for n in qc["signals"]["notes"])
    assert report["qc"]["summary"] == qc["summary"]
    # The table artifact is in the Prefect API, one row per re-voiced face.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:  # the newest version of the key: this run's
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["dub-film-qc"])),
                                            sort=ArtifactSort.CREATED_DESC, limit=1)
    table = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert artifact.type == "table"
    assert sorted(row["track"] for row in table) == sorted(drives)
    assert {row["verdict"] for row in table} <= {"unverified", "review", "fail"}  # no SyncNet weights: never pass
