"""A job as a studio names its files (spaces, parentheses, quotes, Japanese and accented letters) runs end
to end, locally and on a real S3-speaking server (moto) on loopback; every published file opens, and no
path in any published JSON points outside the output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import LIGHT_ASD, MOBILENET, shared

pytestmark = pytest.mark.slow

FILM = "ファイル name (v2) 'final'.mpg"
STEM = "Ñandú – diálogo (ES) «v1».wav"
ME = "música & efectos 音楽.wav"


@pytest.fixture(scope="module")
def studio_files(tmp_path_factory):
    if not (MOBILENET.exists() and LIGHT_ASD.exists()):
        pytest.skip("RetinaFace / Light-ASD weights missing from ../shared/data/weights")
    import subprocess

    d = tmp_path_factory.mktemp("studio")
    clip = shared("grid-talking-faces", "bbaf2n.mpg")
    shutil.copyfile(clip, d / FILM)
    for name, src in ((STEM, clip), (ME, clip)):  # the dub: the clip's own voice; M&E: the same, quieter
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", f"file:{clip}", "-vn", "-ar", "48000", "-ac", "1",
                        "-af", "volume=0.2" if name == ME else "anull", f"file:{d / name}"], check=True)
    return d


def _job(film: str, stem: str, me: str, output: str) -> dict:
    return {"schema": "dub-film/manifest@1", "film": film, "title": "Película «final»",
            "dub": {"language": "es", "characters": [{"name": "ÑANDÚ", "path": stem}], "me": me},
            "output": output, "options": {"speakers": "on", "audio_length_policy": "pad", "cache": False}}


def _paths_in(value, found: list[str]) -> list[str]:
    if isinstance(value, dict):
        for v in value.values():
            _paths_in(v, found)
    elif isinstance(value, list):
        for v in value:
            _paths_in(v, found)
    elif isinstance(value, str) and (value.startswith("/") or ".partial" in value or "dub-film-" in value):
        found.append(value)
    return found


def check_published(out: Path, inputs: Path) -> None:
    """Every published file opens; JSON paths stay inside ``out`` (relative, and existing) or name an input."""
    import opentimelineio as otio

    from lipsync.media.probe import probe
    from lipsync.speakers.rttm import read_rttm

    files = sorted(p for p in out.rglob("*") if p.is_file())
    names = {p.relative_to(out).as_posix() for p in files}
    assert "film.dubbed.mp4" in names and "report.json" in names and "shots.edl" in names and "original.rttm" in names
    for p in files:
        if p.suffix == ".json":
            data = json.loads(p.read_text(encoding="utf-8"))
            for s in _paths_in(data, []):
                if ": " in s:  # a note about an input: it may name the input, never a working file
                    assert ".partial" not in s and "dub-film-" not in s, f"{p.name}: {s!r}"
                    continue
                assert s.startswith(str(inputs)), f"{p.name}: {s!r} points outside the output"
                assert Path(s).exists(), f"{p.name}: {s!r} does not exist"
            for key in ("segment", "file"):
                for entry in data.get("shots", []) if isinstance(data.get("shots"), list) else []:
                    if isinstance(entry, dict) and entry.get(key):
                        assert (p.parent / entry[key]).exists() or (out / entry[key]).exists(), (p.name, entry[key])
        elif p.suffix == ".edl":
            timeline = otio.adapters.read_from_file(str(p), "cmx_3600")
            clips = list(timeline.find_clips())
            assert clips and all(c.name == FILM for c in clips), [c.name for c in clips]
        elif p.suffix == ".rttm":
            assert read_rttm(p, 16000)
        elif p.suffix in (".mp4", ".mkv", ".mov"):
            assert probe(p).require_video().frame_count == 75
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["title"] == "Película «final»"
    assert report["speakers"]["characters"], report["speakers"]


def test_local_job_with_studio_names(studio_files, tmp_path, model_store):
    from typer.testing import CliRunner

    from dub.cli import app

    job = studio_files / "trabajo «v2».yaml"
    job.write_text(yaml.safe_dump(_job(FILM, STEM, ME, str(tmp_path / "salida (ES) 出力")), allow_unicode=True), encoding="utf-8")
    res = CliRunner().invoke(app, ["run", str(job)])
    assert res.exit_code == 0, res.output
    check_published(tmp_path / "salida (ES) 出力", studio_files)


def test_s3_job_with_studio_names(studio_files, tmp_path, model_store):
    from s3server import moto_s3

    from flows.dub_film import dub_film

    with moto_s3() as server:
        server.bucket("studio")
        client = server.client()
        for name in (FILM, STEM, ME):
            client.upload_file(str(studio_files / name), "studio", f"entrées/película 1/{name}")
        body = _job(FILM, STEM, ME, "../salidas/película 1 «v2»")
        client.put_object(Bucket="studio", Key="entrées/película 1/trabajo «v2».yaml",
                          Body=yaml.safe_dump(body, allow_unicode=True).encode("utf-8"))
        result = dub_film(manifest="s3://studio/entrées/película 1/trabajo «v2».yaml")
        assert result["output"].startswith("s3://studio/")
        prefix = "entrées/salidas/película 1 «v2»/"
        keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket="studio", Prefix=prefix)
                for o in page.get("Contents", [])]
        assert f"{prefix}_SUCCESS" in keys
        out = tmp_path / "fetched"
        for key in keys:
            dst = out / key[len(prefix):]
            dst.parent.mkdir(parents=True, exist_ok=True)
            client.download_file("studio", key, str(dst))
        (out / "_SUCCESS").unlink()
        check_published(out, studio_files)
