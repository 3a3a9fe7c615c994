"""The demo's sample job (`make demo`): two real faces taking turns, a German dub with one character stem per face;
the casting gives each face its own voice, the one that speaks where that face speaks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import LIGHT_ASD, MOBILENET


def test_demo_sample_casts_one_voice_to_each_face(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dub.cli import app
    from dub.sample import make_demo_job, shared_data
    from dubcore.manifest import write_manifest
    from lipsync.media.probe import probe

    data = shared_data()
    if data is None or not (MOBILENET.exists() and LIGHT_ASD.exists()):
        pytest.skip("the demo's sources or weights are missing from ../shared/data")
    job = make_demo_job(tmp_path / "sample", data)
    assert [c.name for c in job.dub.characters] == ["ALICE", "BOB"] and job.options.runs_speakers and job.options.runs_qc
    info = probe(job.film)
    assert len(info.audio) == 1  # speech in the original: the diarization and the active-speaker audio have work
    for c in job.dub.characters:  # speech in the dub, at the film's length
        stem = probe(c.path)
        assert abs(stem.audio[0].duration - info.require_video().frame_count / 25) < 0.04
    manifest = tmp_path / "sample" / "manifest.yaml"
    write_manifest(manifest, job)
    out = tmp_path / "cast" / "speakers.json"
    result = CliRunner().invoke(app, ["match", str(manifest), "--out", str(out)])
    assert result.exit_code == 0, result.output
    plan = json.loads(out.read_text())
    faces = json.loads((out.parent / "faces.json").read_text())
    tracks = [t for s in faces["shots"] for t in s["tracks"]]
    x = {t["id"]: sum(o["box"][0] + o["box"][2] for o in t["observations"]) / 2 / len(t["observations"]) for t in tracks}
    assert len(x) == 2, x  # one track per face, the whole film
    voice = {d["track"]: d["voice"] for d in plan["drives"]}
    side = {tid: "left" if cx < 360 else "right" for tid, cx in x.items()}
    assert sorted(side.values()) == ["left", "right"]
    assert {side[t]: v for t, v in voice.items()} == {"left": "ALICE", "right": "BOB"}, (voice, plan["notes"])
