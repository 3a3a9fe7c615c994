"""Operator review of the casting (options.review_casting) against a real Prefect server (one start).

The film is the real two-face composite (GRID, 6 s, 25 fps: the left man speaks 1.0-2.5 s, the right
woman 3.7-5.3 s) dubbed by two character stems cut from its own soundtrack (ALICE = the first half,
BOB = the second).  No Wav2Lip weights: the run renders the casting preview instead of lips, so what
the review decided is read from speakers.json / report.json.

* From a deployment (process worker): the run stops after casting in state Suspended (its process
  exits), with the review artifacts, the preview and the plan in OUTPUT/review/<run-id>/ and nothing
  published.  A first answer (run input sent through the API) names a face that does not exist: the
  re-run asks again (round 2, suspended again, the error in the artifact).  The second answer sets
  ALICE's face to null; the worker runs the flow a third time and the published casting drives only
  BOB's face.
* In-process (no deployment): the run pauses (state Paused) and, unanswered, fails with the timeout
  message; nothing is published.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from conftest import LIGHT_ASD, MOBILENET, shared
from lipsync.media.probe import probe
from prefect_server import ROOT, prefect_server

POOL = "dub-film-review-test"
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PREFECT_WORKER_QUERY_SECONDS": "1"}


def test_review_options_merge_and_material():
    """Fast checks of the pieces: the options, the merge of an answer, the review folder, the artifact text, the form."""
    from datetime import datetime, timezone

    from dubcore.manifest import Casting, DubJob, JobOptions
    from lipsync.preview import CastingView
    from tasks.review import (CastingReview, form_for, merged_casting, plan_digest, review_folder_uri, review_markdown,
                              table_rows)

    assert JobOptions(review_casting=True).runs_speakers and not JobOptions().runs_speakers
    with pytest.raises(ValueError, match="review_casting needs the speaker stage"):
        JobOptions(review_casting=True, speakers="off")
    job = DubJob(film="/f.mp4", dub={"dialogue": "/d.wav"}, output="/out/x",
                 casting=Casting(voices={"ALICE": "SPK00"}, tracks={"shot-0001/face-01": None}))
    answer = CastingReview(voices={"ALICE": "SPK01", "BOB": "SPK00"}, tracks={"shot-0002/face-01": "SPK00"})
    merged = merged_casting(job.casting, answer)
    assert merged.voices == {"ALICE": "SPK01", "BOB": "SPK00"}
    assert merged.tracks == {"shot-0001/face-01": None, "shot-0002/face-01": "SPK00"}
    assert merged_casting(job.casting, CastingReview()) == job.casting  # approve as shown: nothing to cast again
    assert review_folder_uri(job, "r1") == "/out/x/review/r1"
    assert review_folder_uri(job.model_copy(update={"output": "s3://b/jobs/out/"}), "r1") == "s3://b/jobs/out/review/r1"

    form = form_for(job.casting, "check it")
    defaults = form().model_dump()
    assert defaults == {"approve": True, "voices": {"ALICE": "SPK00"}, "tracks": {"shot-0001/face-01": None}, "comment": ""}
    assert form._description == "check it"

    plan = {"voices": [{"name": "ALICE"}], "voice_links": [{"role": "ALICE", "speaker": "SPK00"}],
            "track_links": [{"track": "shot-0001/face-01", "shot": "shot-0001", "speaker": "SPK00", "affinity": 0.5,
                             "confidence": 0.42, "reason": "few frames", "speaking": [[0, 5]]}],
            "drives": [{"track": "shot-0001/face-01", "shot": "shot-0001", "voice": "ALICE", "speaking": [[0, 5]]}],
            "decisions": [{"track": "shot-0001/face-01", "review": True}], "off_screen": ["SPK02"], "notes": ["a note"]}
    view = CastingView.from_plan_dict(plan, ["shot-0002/face-01"])
    md = review_markdown(view, {"shot-0001/face-01": b"\xff\xd8jpeg", "shot-0002/face-01": b"\xff\xd8jpeg"},
                         {"preview.mp4": "/out/x/review/r1/preview.mp4"}, title="T", timeout_s=60,
                         deadline=datetime(2030, 1, 1, tzinfo=timezone.utc), speakers=["SPK00", "SPK02"],
                         error="casting.tracks: no face track 'x'", inline_limit=1)
    assert "## shot-0001" in md and "## shot-0002" in md and "0.42 ⚠ review" in md and "few frames" in md
    assert md.count("data:image/jpeg;base64,") == 1  # the inline limit
    assert "file:///out/x/review/r1/preview.mp4" in md and "no face track 'x'" in md and "`SPK02`" in md
    assert "2030-01-01 00:00 UTC" in md and "nothing is rendered" in md
    assert plan_digest(plan) == plan_digest(json.loads(json.dumps(plan)))
    assert plan_digest(plan) != plan_digest({**plan, "drives": [{**plan["drives"][0], "speaking": [[0, 6]]}]})
    rows = {r["track"]: r for r in table_rows(view)}
    assert rows["shot-0001/face-01"]["driven"] and rows["shot-0001/face-01"]["frames"] == 5
    assert not rows["shot-0002/face-01"]["driven"]


@pytest.fixture(scope="module")
def server():
    if not (MOBILENET.exists() and LIGHT_ASD.exists()):
        pytest.skip("RetinaFace / Light-ASD weights missing from ../shared/data/weights")
    with prefect_server(extra_env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}) as s:
        yield s


def api(server, fn):  # type: ignore[no-untyped-def]
    from prefect.client.orchestration import get_client

    async def go():  # type: ignore[no-untyped-def]
        async with get_client() as client:
            return await fn(client)

    with server.settings():
        return asyncio.run(go())


@pytest.fixture(scope="module")
def stems(tmp_path_factory):
    """ALICE speaks the first 3 s of the composite's own soundtrack, BOB the last 3 s (16 kHz mono WAV)."""
    import soundfile as sf

    film = shared("asd-two-face-composite", "grid_two_face_turns.mp4")
    folder = tmp_path_factory.mktemp("review-stems")
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(film), "-f", "f32le", "-ac", "1", "-ar", "16000", "pipe:1"],
                         capture_output=True, check=True).stdout
    n = 6 * 16000
    audio = np.frombuffer(raw, "<f4")[:n]
    audio = np.pad(audio, (0, n - len(audio)))
    alice, bob = audio.copy(), audio.copy()
    alice[3 * 16000 :] = 0
    bob[: 3 * 16000] = 0
    sf.write(folder / "alice.wav", alice, 16000)
    sf.write(folder / "bob.wav", bob, 16000)
    return film, folder


def job_of(stems, out: Path, **options) -> dict:  # type: ignore[no-untyped-def]
    film, folder = stems
    return {"film": str(film), "output": str(out), "title": "review test",
            "dub": {"characters": [{"name": "ALICE", "path": str(folder / "alice.wav")},
                                   {"name": "BOB", "path": str(folder / "bob.wav")}]},
            "options": {"review_casting": True, "num_speakers": 2, "audio_sample_rate": 16000, "face_device": "cpu",
                        "lipsync_device": "cpu", "crf": 23, "preset": "veryfast", **options}}


def wait_state(server, run_id, done, timeout: float, context=lambda: ""):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        run = api(server, lambda c: c.read_flow_run(run_id))
        if run.state is not None and done(run.state):
            return run
        if run.state is not None and run.state.is_final() and not done(run.state):
            raise AssertionError(f"run ended {run.state.type}: {run.state.message}\n{context()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"run still {run.state and run.state.name} after {timeout} s\n{context()}")
        time.sleep(1)


@pytest.mark.slow
def test_a_suspended_review_renders_the_operators_casting(server, stems, tmp_path):
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run

    out = tmp_path / "out"

    async def deploy(client):  # type: ignore[no-untyped-def]
        await client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        flow_id = await client.create_flow_from_name("dub-film")
        dep = await client.create_deployment(
            flow_id, "review-test", entrypoint="flows/dub_film.py:dub_film", work_pool_name=POOL, path=str(ROOT),
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}])
        run = await client.create_flow_run_from_deployment(dep, parameters={"job": job_of(stems, out)})
        return run.id

    run_id = api(server, deploy)
    worker = server.start_worker(POOL, cwd=tmp_path, extra_env=ENV)
    log = lambda: server.child_log(worker)  # noqa: E731

    # 1. Stopped after casting, suspended: nothing rendered, nothing published, no process held.
    run = wait_state(server, run_id, lambda s: s.type == StateType.PAUSED, 420, log)
    assert run.state.name == "Suspended", log()
    assert not (out / "film.dubbed.mp4").exists() and not list(out.glob(".partial-*"))
    folder = out / "review" / str(run_id)
    reviewed = json.loads((folder / "speakers.json").read_text())
    drives = {d["voice"]: d["track"] for d in reviewed["drives"]}
    assert set(drives) == {"ALICE", "BOB"} and drives["ALICE"] != drives["BOB"], reviewed["drives"]
    preview = probe(folder / "preview.mp4")
    assert preview.require_video().frame_count == 150 and preview.require_video().height <= 360 and preview.audio
    assert len(list((folder / "thumbnails").glob("*.jpg"))) >= 2

    arts = api(server, lambda c: c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))))
    by_key = {a.key: a for a in arts}
    md = by_key["dub-film-casting-review"]
    assert md.type == "markdown"
    assert all(tid in md.data for tid in drives.values()) and "data:image/jpeg;base64," in md.data
    assert str(folder / "preview.mp4") in md.data
    table = json.loads(by_key["dub-film-casting"].data) if isinstance(by_key["dub-film-casting"].data, str) else by_key["dub-film-casting"].data
    assert {(r["track"], r["voice"]) for r in table if r["driven"]} == {(t, v) for v, t in drives.items()}
    assert by_key["dub-film-casting-preview"].type == "markdown" or by_key["dub-film-casting-preview"].data.endswith("preview.mp4")
    # The form the UI shows: the CastingReview schema, pre-filled with the job's (empty) overrides.
    schema = json.loads(api(server, lambda c: c.read_flow_run_input(run_id, "suspended-casting-review-1-schema")))
    assert {"approve", "voices", "tracks", "comment"} <= set(schema["properties"])
    assert len(json.loads(api(server, lambda c: c.read_flow_run_input(run_id, "casting-review-1-plan-sha256")))) == 64

    # 2. A first answer naming a face that does not exist: asked again (round 2), the error on top.
    with server.settings():
        resume_flow_run(run_id, run_input={"tracks": {"shot-0009/face-07": None}})
    wait_state(server, run_id, lambda s: s.name == "Suspended" and s.state_details.pause_key == "casting-review-2", 420, log)
    md2 = api(server, lambda c: c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
                                                                                 key=ArtifactFilterKey(any_=["dub-film-casting-review"]))))
    assert any("no face track 'shot-0009/face-07'" in a.data for a in md2), [a.data[:300] for a in md2]
    assert not (out / "film.dubbed.mp4").exists()

    # 3. The operator's answer: ALICE's face is never lip-synced.
    with server.settings():
        resume_flow_run(run_id, run_input={"approve": True, "tracks": {drives["ALICE"]: None}, "comment": "not her line"})
    run = wait_state(server, run_id, lambda s: s.type == StateType.COMPLETED, 420, log)

    final = json.loads((out / "speakers.json").read_text())
    assert {d["track"]: d["voice"] for d in final["drives"]} == {drives["BOB"]: "BOB"}
    report = json.loads((out / "report.json").read_text())
    assert report["review"]["status"] == "approved" and report["review"]["edited"]
    assert report["review"]["casting"]["tracks"] == {drives["ALICE"]: None}
    assert [r["round"] for r in report["review"]["rounds"]] == [1, 2]
    assert report["review"]["rounds"][1]["comment"] == "not her line"
    (shot,) = report["shots"]
    assert [d["track"] for d in shot["drives"]] == [drives["BOB"]]
    assert report["preview"]["note"] == "no Wav2Lip weights: casting preview rendered instead of lips"
    assert probe(out / "preview.mp4").require_video().frame_count == 150
    assert probe(out / "film.dubbed.mp4").require_video().frame_count == 150
    states = api(server, lambda c: c.read_flow_run_states(run_id))
    assert [s.name for s in states].count("Suspended") == 2


@pytest.mark.slow
def test_an_unanswered_inprocess_review_pauses_then_fails_with_nothing_published(server, stems, tmp_path):
    import torch

    from flows.dub_film import dub_film

    from dubcore.timebase import samples_for_frames
    from lipsync.media.synth import make_film, write_tone

    torch.set_num_threads(1)
    # The mechanics only: a small generated film (2 shots, a tone for dialogue) is enough.
    film = make_film(tmp_path / "film.mp4", [20, 25], fps=Fraction(25))
    write_tone(tmp_path / "dialogue.wav", samples_for_frames(45, Fraction(25), 48000), 48000, freq=300.0, seed=3)
    out = tmp_path / "out"
    job = {"film": str(film.path), "dub": {"dialogue": str(tmp_path / "dialogue.wav")}, "output": str(out),
           "options": {"review_casting": True, "review_timeout_s": 3, "face_device": "cpu", "lipsync_device": "cpu"}}
    from prefect.logging.handlers import APILogHandler

    with server.settings():
        state = dub_film(job=job, return_state=True)
        APILogHandler().flush()  # while the server is up: its logs are sent now, not at exit
    assert state.is_failed()
    run_id = state.state_details.flow_run_id
    run = api(server, lambda c: c.read_flow_run(run_id))
    assert run.state.is_failed() and ("casting review timed out after 3 s: nothing rendered, nothing published; "
                                      "approve by re-running with `casting:`") in run.state.message, run.state.message
    names = [s.name for s in api(server, lambda c: c.read_flow_run_states(run_id))]
    assert "Paused" in names, names
    # Nothing published: only the review record the operator was shown.
    assert sorted(p.name for p in out.iterdir()) == ["review"]
    assert (out / "review" / str(run_id) / "preview.mp4").exists()


def test_review_folder_on_object_storage(tmp_path):
    """The review material of an s3:// output lands under OUTPUT/review/<run-id>/, byte for byte."""
    from s3server import moto_s3

    from dubcore.manifest import DubJob
    from tasks.review import publish_review_folder_task

    (tmp_path / "preview.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64)
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8jpeg")
    with moto_s3() as s3:
        s3.bucket("studio")
        job = DubJob(film="/f.mp4", dub={"dialogue": "/d.wav"}, output="s3://studio/out/film1")
        got = publish_review_folder_task.fn(job, "run-1", {"preview.mp4": tmp_path / "preview.mp4",
                                                           "thumbnails/a.jpg": tmp_path / "a.jpg"})
        assert got == {"preview.mp4": "s3://studio/out/film1/review/run-1/preview.mp4",
                       "thumbnails/a.jpg": "s3://studio/out/film1/review/run-1/thumbnails/a.jpg"}
        body = s3.client().get_object(Bucket="studio", Key="out/film1/review/run-1/preview.mp4")["Body"].read()
        assert body == (tmp_path / "preview.mp4").read_bytes()
