"""Stage caching for the review loop: a job run again after an edit of its `casting` section takes shots, faces,
active speakers and both diarizations from the stage cache (their Prefect tasks are Cached) and casts again;
its files are those of a run without any cache."""

from __future__ import annotations

import hashlib
import json
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from conftest import LIGHT_ASD, MOBILENET, shared

STAGES = ("detect-shots-", "faces shot-", "diarize-original-", "dub-voices-", "active-speakers-", "cast-")
ANALYSIS = ("shots.json", "shots.edl", "shots.otio", "faces.json", "asd.json", "original.rttm", "dub.rttm")


def _film_of_three_speaking_shots(dst: Path) -> Path:
    """Three GRID sentences, 30 frames each (frames 15-45: the speaker is talking), with their sound, cut together;
    the middle one mirrored and tinted so every cut is clear."""
    clips = [shared("grid-talking-faces", n) for n in ("bbaf2n.mpg", "lwbsza.mpg", "sbia1a.mpg")]
    graph = ("[0:v]trim=start_frame=15:end_frame=45,setpts=PTS-STARTPTS,format=yuv420p[a];"
             "[1:v]trim=start_frame=15:end_frame=45,setpts=PTS-STARTPTS,hflip,hue=h=120:s=1.5,format=yuv420p[b];"
             "[2:v]trim=start_frame=15:end_frame=45,setpts=PTS-STARTPTS,eq=brightness=0.15,format=yuv420p[c];"
             "[0:a]atrim=0.6:1.8,asetpts=PTS-STARTPTS[x];[1:a]atrim=0.6:1.8,asetpts=PTS-STARTPTS[y];"
             "[2:a]atrim=0.6:1.8,asetpts=PTS-STARTPTS[z];"
             "[a][x][b][y][c][z]concat=n=3:v=1:a=1[v][s]")
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
    for c in clips:
        cmd += ["-i", str(c)]
    cmd += ["-filter_complex", graph, "-map", "[v]", "-map", "[s]", "-c:v", "libx264", "-crf", "16", "-r", "25",
            "-c:a", "aac", "-ar", "48000", str(dst)]
    subprocess.run(cmd, check=True)
    return dst


@pytest.fixture(scope="module")
def film(tmp_path_factory) -> Path:
    if not (MOBILENET.exists() and LIGHT_ASD.exists()):
        pytest.skip("RetinaFace / Light-ASD weights missing from ../shared/data/weights")
    return _film_of_three_speaking_shots(tmp_path_factory.mktemp("stage-cache") / "film.mp4")


def _job(film: Path, out: Path, cache: Path | None, casting: dict | None = None):  # type: ignore[no-untyped-def]
    from dubcore.manifest import DubJob

    return DubJob.model_validate({
        "film": str(film), "output": str(out),
        "dub": {"dialogue": str(shared("grid-talking-faces", "pwij3p.mpg"))},  # one mixed stem: the dub is diarized too
        "options": {"speakers": "on", "qc": "off", "audio_length_policy": "pad",
                    **({"cache_dir": str(cache)} if cache else {"cache": False})},
        "casting": casting or {},
    })


def _stage_states(flow_run_id) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {s: sorted(r.state.name for r in runs if r.name.startswith(s)) for s in STAGES}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_casting_edit_reruns_casting_only(film, tmp_path):
    from flows.dub_film import dub_film

    cache = tmp_path / "cache"
    first = dub_film(_job(film, tmp_path / "one", cache), return_state=True)
    assert first.is_completed(), first
    states = _stage_states(first.state_details.flow_run_id)
    assert states == {"detect-shots-": ["Completed"], "faces shot-": ["Completed"] * 3, "diarize-original-": ["Completed"],
                      "dub-voices-": ["Completed"], "active-speakers-": ["Completed"], "cast-": ["Completed"]}, states
    faces = json.loads((tmp_path / "one" / "faces.json").read_text())
    tracks = sorted(t["id"] for s in faces["shots"] for t in s["tracks"])
    assert len(tracks) == 3, tracks  # one face per shot
    plan = json.loads((tmp_path / "one" / "speakers.json").read_text())

    # The operator's edit: the face of shot 2 is never lip-synced.
    casting = {"tracks": {tracks[1]: None}}
    second = dub_film(_job(film, tmp_path / "two", cache, casting), return_state=True)
    assert second.is_completed(), second
    states = _stage_states(second.state_details.flow_run_id)
    assert states == {"detect-shots-": ["Cached"], "faces shot-": ["Cached"] * 3, "diarize-original-": ["Cached"],
                      "dub-voices-": ["Cached"], "active-speakers-": ["Cached"], "cast-": ["Completed"]}, states
    for name in ANALYSIS:  # every file of the staging folder is there, from the cached records
        assert _sha(tmp_path / "two" / name) == _sha(tmp_path / "one" / name), name
    edited = json.loads((tmp_path / "two" / "speakers.json").read_text())
    assert edited != plan
    assert tracks[1] not in {d["track"] for d in edited.get("drives", [])}

    # The same edit without any cache: everything runs again, and the files are the same bytes
    # (the dub voices live in the run's scratch folder then: their paths in speakers.json differ).
    clean = dub_film(_job(film, tmp_path / "clean", None, casting), return_state=True)
    assert clean.is_completed(), clean
    states = _stage_states(clean.state_details.flow_run_id)
    assert all(set(v) == {"Completed"} for v in states.values()), states
    # Published, a voice is named by the dub track it was made from (its working copy, cached or not, stays private).
    clean_plan = json.loads((tmp_path / "clean" / "speakers.json").read_text())
    for plan_ in (edited, clean_plan):
        assert [v["audio"] for v in plan_["voices"]] == [str(shared("grid-talking-faces", "pwij3p.mpg"))] * len(plan_["voices"])
    for name in ANALYSIS:
        assert _sha(tmp_path / "clean" / name) == _sha(tmp_path / "two" / name), name

    def without_paths(doc):  # type: ignore[no-untyped-def]
        if isinstance(doc, dict):
            return {k: without_paths(v) for k, v in doc.items() if k != "audio"}
        if isinstance(doc, list):
            return [without_paths(v) for v in doc]
        return doc

    assert without_paths(json.loads((tmp_path / "clean" / "speakers.json").read_text())) == without_paths(edited)
    assert _sha(tmp_path / "clean" / "film.dubbed.mp4") == _sha(tmp_path / "two" / "film.dubbed.mp4")


def test_stage_keys_follow_the_options_of_each_stage(tmp_path):
    """Changing an option of a stage changes that stage's key (and, through the records, those after it); options
    of other stages, and where files go, change nothing."""
    from dubcore.manifest import Casting, JobOptions
    from dubcore.records import Shot
    from dubcore.timebase import FrameRange
    from lipsync.stagecache import asd_key, cast_key, content_digest, diarize_key, faces_key, shots_key

    fd = "f" * 64
    base = JobOptions()
    shot = Shot("shot-0001", 0, FrameRange(0, 30), Fraction(25))

    def keys(o: JobOptions) -> dict[str, str]:
        return {"shots": shots_key(fd, o), "faces": faces_key(fd, shot, o, "cpu"), "asd": asd_key(fd, [], o, "cpu"),
                "diarize": diarize_key("a" * 64, o, "film")}

    k0 = keys(base)
    assert keys(base) == k0 and len(set(k0.values())) == 4
    changed = {
        "min_shot_frames": ({"min_shot_frames": 10}, {"shots"}),
        "face_min_size": ({"face_min_size": 40.0}, {"faces"}),
        "face_max_size": ({"face_max_size": 320}, {"faces"}),
        "asd_weights": ({"asd_weights": str(tmp_path / "other.model")}, {"asd"}),
        "num_speakers": ({"num_speakers": 2}, {"diarize"}),
        "diarization_backend": ({"diarization_backend": "embedded"}, {"diarize"}),
        "crf": ({"crf": 18}, set()),
        "cache_dir": ({"cache_dir": str(tmp_path)}, set()),
        "lipsync_batch_size": ({"lipsync_batch_size": 4}, set()),
    }
    for name, (update, stages) in changed.items():
        k = keys(base.model_copy(update=update))
        assert {s for s in k if k[s] != k0[s]} == stages, name
    assert faces_key(fd, shot, base, "cuda") != k0["faces"]  # another device, other floats
    assert shots_key("e" * 64, base) != k0["shots"]  # another film
    # the casting: its section, and the content of what it reads
    inputs = {"tracks": [], "asd": {"scores": [0.5, 0.25]}}
    c0 = cast_key(inputs, Casting(), base)
    assert cast_key(inputs, Casting(), base.model_copy(update={"cache_dir": "/elsewhere"})) == c0
    assert cast_key(inputs, Casting(tracks={"shot-0001/face-01": None}), base) != c0
    assert cast_key({**inputs, "asd": {"scores": [0.5, 0.26]}}, Casting(), base) != c0
    import numpy as np

    a = np.arange(10, dtype=np.float32)
    assert content_digest(a) == content_digest(a.copy()) != content_digest(a[::-1].copy())
