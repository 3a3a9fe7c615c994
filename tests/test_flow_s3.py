"""The dub-film flow on object storage: a real S3-speaking server (moto, server mode) on 127.0.0.1.

The film, the dub tracks and the manifest are objects; the flow reads the manifest by
URI, fetches and verifies the inputs, and publishes the film, the shot list and the QC
report under the output prefix with ``_SUCCESS`` last.  Nothing appears there before
the run commits; a killed run and bad inputs leave nothing there.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction

import pytest
import yaml

from dubcore.timebase import samples_for_frames
from lipsync.media.synth import make_film, write_tone

pytestmark = pytest.mark.slow

FPS = Fraction(25)
BUCKET = "studio"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    from s3server import moto_s3

    d = tmp_path_factory.mktemp("s3job")
    film = make_film(d / "film.mp4", [20, 25], fps=FPS, size=(320, 240))
    n = samples_for_frames(film.frame_count, FPS, 48000)
    write_tone(d / "dialogue.wav", n, 48000, freq=300.0, seed=3)
    with moto_s3() as server:
        server.bucket(BUCKET)
        client = server.client()
        client.upload_file(str(d / "film.mp4"), BUCKET, "inputs/film1/film.mp4")
        client.upload_file(str(d / "dialogue.wav"), BUCKET, "inputs/film1/dialogue.wav")
        yield server, client, d


def _put_manifest(client, key: str, output: str, **extra) -> str:  # type: ignore[no-untyped-def]
    body = {"schema": "dub-film/manifest@1", "film": "../inputs/film1/film.mp4",
            "dub": {"dialogue": "../inputs/film1/dialogue.wav"}, "output": output,
            "options": {"qc": "on"}, **extra}
    client.put_object(Bucket=BUCKET, Key=key, Body=yaml.safe_dump(body).encode())
    return f"s3://{BUCKET}/{key}"


def _keys(client, prefix: str) -> list[str]:  # type: ignore[no-untyped-def]
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_flow_reads_inputs_from_s3_and_publishes_outputs_atomically(s3, tmp_path, monkeypatch):
    from dubcore import s3 as s3mod
    from flows.dub_film import dub_film
    from lipsync.media.probe import probe

    server, client, _ = s3
    uri = _put_manifest(client, "jobs/film1.yaml", "../outputs/film1")  # relative to the manifest's prefix
    commit_started = threading.Event()
    real_commit = s3mod.S3Staging.commit

    def commit(self):  # type: ignore[no-untyped-def]
        commit_started.set()
        return real_commit(self)

    monkeypatch.setattr(s3mod.S3Staging, "commit", commit)
    seen_early: list[str] = []
    stop = threading.Event()

    def watch() -> None:  # nothing may appear under the output prefix before the run commits
        while not stop.is_set() and not commit_started.is_set():
            seen_early.extend(_keys(client, "outputs/film1/"))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = dub_film(manifest=uri)
    finally:
        stop.set()
        watcher.join()
    assert seen_early == []
    assert result["output"] == f"s3://{BUCKET}/outputs/film1"

    keys = _keys(client, "outputs/film1/")
    assert not [k for k in keys if "/.staging-" in k]
    for name in ("film.dubbed.mp4", "shots.json", "shots.edl", "report.json", "qc/report.json", "qc/report.html", "_SUCCESS"):
        assert f"outputs/film1/{name}" in keys, keys
    success = json.loads(client.get_object(Bucket=BUCKET, Key="outputs/film1/_SUCCESS")["Body"].read())
    assert success["schema"] == "dub-film/success@1"
    assert sorted(f["key"] for f in success["files"]) == sorted(k[len("outputs/film1/"):] for k in keys if not k.endswith("_SUCCESS"))

    film = tmp_path / "film.dubbed.mp4"
    client.download_file(BUCKET, "outputs/film1/film.dubbed.mp4", str(film))
    assert probe(film).require_video().frame_count == 45
    shots = json.loads(client.get_object(Bucket=BUCKET, Key="outputs/film1/shots.json")["Body"].read())
    assert [s["frames"] for s in shots["shots"]] == [[0, 20], [20, 45]]
    qc = json.loads(client.get_object(Bucket=BUCKET, Key="outputs/film1/qc/report.json")["Body"].read())
    assert qc["schema"] == "dub-film/qc@1" and len(qc["shots"]) == 2
    report = json.loads(client.get_object(Bucket=BUCKET, Key="outputs/film1/report.json")["Body"].read())
    assert report["inputs"]["film"] == f"s3://{BUCKET}/inputs/film1/film.mp4"

    # The operator's summary in the Prefect UI links the published film and QC report.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as api:
        (summary,) = api.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["dub-film-summary"])),
                                        sort=ArtifactSort.CREATED_DESC, limit=1)
    assert f"(s3://{BUCKET}/outputs/film1/film.dubbed.mp4)" in summary.data
    assert f"(s3://{BUCKET}/outputs/film1/qc/report.html)" in summary.data


def test_killed_run_leaves_nothing_at_the_published_location(s3, tmp_path):
    server, client, _ = s3
    uri = _put_manifest(client, "jobs/film2.yaml", f"s3://{BUCKET}/outputs/film2")
    staging_dir = tmp_path / "staging"
    staging_dir.mkdir()
    env = {**os.environ, "DUB_S3_STAGING_DIR": str(staging_dir), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dub.cli", "run", uri], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list(staging_dir.rglob("shots.json")):  # mid-way: the shot list is written, the film is not
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run never reached the shot list"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    assert _keys(client, "outputs/film2") == []


@pytest.mark.parametrize("case", ["missing input", "missing bucket", "unreachable endpoint", "wrong credentials"])
def test_bad_storage_input_fails_early_and_writes_nothing(s3, tmp_path, case):
    from s3server import closed_port_url, patched_env

    from dubcore.storage import StorageError
    from flows.dub_film import dub_film

    server, client, _ = s3
    before = _keys(client, "")
    if case == "missing input":
        uri = _put_manifest(client, f"jobs/{case.replace(' ', '-')}.yaml", f"s3://{BUCKET}/outputs/bad",
                            film="../inputs/film1/no-such-film.mp4")
        expect = f"s3://{BUCKET}/inputs/film1/no-such-film.mp4"
        env: dict[str, str] = {}
    elif case == "missing bucket":
        uri = _put_manifest(client, f"jobs/{case.replace(' ', '-')}.yaml", "s3://no-such-bucket/outputs/bad")
        expect = "no-such-bucket"
        env = {}
    elif case == "unreachable endpoint":
        uri = _put_manifest(client, f"jobs/{case.replace(' ', '-')}.yaml", f"s3://{BUCKET}/outputs/bad")
        env = {"DUB_S3_ENDPOINT_URL": closed_port_url(), "DUB_S3_MAX_ATTEMPTS": "1", "DUB_S3_CONNECT_TIMEOUT": "1"}
        expect = "127.0.0.1"
    else:  # the server checks signatures (moto's IAM simulation): the test's keys exist nowhere
        uri = _put_manifest(client, f"jobs/{case.replace(' ', '-')}.yaml", f"s3://{BUCKET}/outputs/bad")
        env = {"AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG0", "AWS_SECRET_ACCESS_KEY": "wrong"}
        expect = "credentials"
    before = _keys(client, "")
    t0 = time.monotonic()
    auth = contextlib.nullcontext()
    if case == "wrong credentials":
        from moto.core.authorization import enable_iam_authentication

        auth = enable_iam_authentication()
    with patched_env(env), auth, pytest.raises(StorageError) as err:
        dub_film(manifest=uri)
    assert expect in str(err.value)
    assert time.monotonic() - t0 < 60  # early: before any media work
    assert _keys(client, "") == before  # nothing written anywhere in the bucket
