"""Resume: a run that dies after some shots, started again, renders none of the finished shots again
and delivers the same film, byte for byte, as a run that was never interrupted."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from conftest import cached_segment, shared


def _film_of_three_face_shots(dst: Path) -> Path:
    """Three GRID clips of 18 frames (shots of at least min_shot_frames 15), cut together; the middle one mirrored and tinted so every cut is clear."""
    clips = [shared("grid-talking-faces", n) for n in ("bbaf2n.mpg", "lwbsza.mpg", "sbia1a.mpg")]
    graph = ("[0:v]trim=end_frame=18,setpts=PTS-STARTPTS,format=yuv420p[a];"
             "[1:v]trim=end_frame=18,setpts=PTS-STARTPTS,hflip,hue=h=120:s=1.5,format=yuv420p[b];"
             "[2:v]trim=end_frame=18,setpts=PTS-STARTPTS,eq=brightness=0.15,format=yuv420p[c];"
             "[a][b][c]concat=n=3:v=1:a=0[v]")
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
    for c in clips:
        cmd += ["-i", str(c)]
    cmd += ["-filter_complex", graph, "-map", "[v]", "-c:v", "libx264", "-crf", "16", "-r", "25", str(dst)]
    subprocess.run(cmd, check=True)
    return dst


@pytest.fixture(scope="module")
def resume_job(tmp_path_factory):
    import torch

    from dubcore.manifest import DubJob
    from lipsync.models.wav2lip import Wav2Lip

    d = tmp_path_factory.mktemp("resume")
    film = _film_of_three_face_shots(d / "film.mp4")
    torch.manual_seed(0)
    ckpt = d / "wav2lip.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in Wav2Lip().state_dict().items()}}, ckpt)

    def job(out: Path, cache: Path) -> DubJob:
        return DubJob.model_validate({
            "film": str(film), "output": str(out),
            "dub": {"dialogue": str(shared("grid-talking-faces", "pwij3p.mpg"))},
            "options": {"lipsync_checkpoint": str(ckpt), "lipsync_backend": "local", "lipsync_device": "cpu",
                        "audio_length_policy": "pad", "speakers": "off", "qc": "off", "cache_dir": str(cache)},
        })

    return job


def _shot_task_states(flow_run_id) -> list[str]:  # type: ignore[no-untyped-def]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return sorted(r.state.name for r in runs if r.name.startswith("lipsync shot-"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_interrupted_run_resumes_without_rendering_finished_shots(resume_job, tmp_path, monkeypatch):
    from flows.dub_film import dub_film
    from lipsync import render

    cache = tmp_path / "cache"
    real_run = render.LipSyncWorker.run
    calls = {"n": 0}

    def dies_on_third_shot(self, job):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash of the machine in the third shot")
        return real_run(self, job)

    # 1. interrupted: two shots rendered, the third crashes; nothing is published
    monkeypatch.setattr(render.LipSyncWorker, "run", dies_on_third_shot)
    first = dub_film(resume_job(tmp_path / "out", cache), return_state=True)
    assert first.is_failed()
    assert not (tmp_path / "out").exists()
    states = _shot_task_states(first.state_details.flow_run_id)
    assert states.count("Completed") == 2 and len(states) == 3, states

    # 2. started again: the two finished shots come from the cache (Cached task runs), one is rendered
    monkeypatch.setattr(render.LipSyncWorker, "run", real_run)
    calls["n"] = 0
    counted = {"n": 0}

    def counting(self, job):  # type: ignore[no-untyped-def]
        counted["n"] += 1
        return real_run(self, job)

    monkeypatch.setattr(render.LipSyncWorker, "run", counting)
    second = dub_film(resume_job(tmp_path / "out", cache), return_state=True)
    assert second.is_completed(), second
    assert counted["n"] == 1
    assert _shot_task_states(second.state_details.flow_run_id) == ["Cached", "Cached", "Completed"]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as api:  # the run's progress bar reached 100 %
        (bar,) = api.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["dub-film-lipsync-progress"])),
                                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[second.state_details.flow_run_id])))
    assert bar.type == "progress" and float(bar.data) == 100.0

    # 3. an uninterrupted run with an empty cache delivers the same bytes
    counted["n"] = 0
    clean = dub_film(resume_job(tmp_path / "clean", tmp_path / "cache-clean"), return_state=True)
    assert clean.is_completed()
    assert counted["n"] == 3
    film = "film.dubbed.mp4"
    assert _sha(tmp_path / "out" / film) == _sha(tmp_path / "clean" / film)
    resumed = json.loads((tmp_path / "out" / "report.json").read_text())["shots"]
    fresh = json.loads((tmp_path / "clean" / "report.json").read_text())["shots"]
    for a, b in zip(resumed, fresh):  # each shot's one copy is in its render cache, under the same content key
        assert a["cache_key"] == b["cache_key"] and not (tmp_path / "out" / "shots" / a["id"] / "segment.mkv").exists()
        assert _sha(cached_segment(a, cache)) == _sha(cached_segment(b, tmp_path / "cache-clean"))

    # 4. a third run of the same job renders nothing
    counted["n"] = 0
    third = dub_film(resume_job(tmp_path / "again", cache), return_state=True)
    assert third.is_completed() and counted["n"] == 0
    assert _shot_task_states(third.state_details.flow_run_id) == ["Cached"] * 3
    assert _sha(tmp_path / "again" / film) == _sha(tmp_path / "clean" / film)
