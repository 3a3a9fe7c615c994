"""Errors as an operator meets them: a deterministic input error fails once (no retry), and `dub run`
says it in one line naming the stage, the input and the fix; `-v` gives the traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import yaml

from dubcore.timebase import samples_for_frames
from lipsync.media.synth import make_film, write_tone

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def long_dub_job(tmp_path_factory):
    d = tmp_path_factory.mktemp("long-dub")
    make_film(d / "film.mp4", [20], fps=Fraction(25))
    n = samples_for_frames(20, Fraction(25), 48000)
    write_tone(d / "long dub (v2).wav", n + 9600, 48000)  # 0.2 s too long: strict policy refuses it
    job = d / "job.yaml"
    job.write_text(yaml.safe_dump({"schema": "dub-film/manifest@1", "film": "film.mp4",
                                   "dub": {"dialogue": "long dub (v2).wav"}}), encoding="utf-8")
    return job


def test_transient_or_not():
    from dubcore.s3 import S3Throttled
    from dubcore.storage import StorageError
    from lipsync.render.params import LipSyncOutOfMemoryError
    from lipsync.media.errors import MediaError
    from lipsync.media.probe import DamagedMediaError
    from lipsync.speakers.plan import CastingError
    from tasks.retry import is_transient

    for exc in (MediaError("x"), DamagedMediaError("x"), CastingError("x"), ValueError("x"), FileNotFoundError("x"),
                StorageError("s3://b/k: no such key")):
        assert not is_transient(exc), exc
    for exc in (LipSyncOutOfMemoryError("x"), ConnectionError("x"), TimeoutError("x"), OSError("disk"),
                S3Throttled("s3://b/k: SlowDown, throttled")):
        assert is_transient(exc), exc


def test_an_audio_length_error_is_attempted_once(long_dub_job, tmp_path, model_store):
    """The mix task has a retry for transient failures; a dub track of the wrong length is not one:
    counted through the Prefect API, the task ran once."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from dubcore.manifest import load_manifest
    from flows.dub_film import dub_film

    job = load_manifest(long_dub_job).model_copy(update={"output": str(tmp_path / "out")})
    state = dub_film(job, return_state=True)
    assert state.is_failed()
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    (mix,) = [r for r in runs if r.name.startswith("mix-dub-audio")]
    assert mix.run_count == 1 and mix.state_type.value == "FAILED"
    assert not (tmp_path / "out").exists()


def _dub(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return subprocess.run([sys.executable, "-m", "dub", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_dub_run_says_what_failed_in_one_line(long_dub_job, tmp_path, model_store):
    out = tmp_path / "out"
    proc = _dub("run", str(long_dub_job), "--out", str(out), home=tmp_path / "prefect")
    assert proc.returncode == 2
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    (line,) = lines
    assert line.startswith("error: dub mix") and "long dub (v2).wav" in line and "audio_length_policy: pad" in line
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    verbose = _dub("-v", "run", str(long_dub_job), "--out", str(out), home=tmp_path / "prefect")
    assert verbose.returncode == 2 and "Traceback (most recent call last)" in verbose.stderr
