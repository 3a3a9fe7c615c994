"""`dub run` end to end on the local Prefect engine, and bad input that must leave nothing behind."""

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from typer.testing import CliRunner

from conftest import cached_segment, psnr
from dub.cli import app
from dubcore.timebase import samples_for_frames
from lipsync.media import FrameReader, probe
from lipsync.media.audio import to_wav
from lipsync.media.synth import make_film, tone, write_tone

pytestmark = pytest.mark.slow

FPS = Fraction(25)
LENGTHS = [30, 25, 35]


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("job")
    film = make_film(d / "film.mp4", LENGTHS, fps=FPS, size=(320, 240))
    n = samples_for_frames(film.frame_count, FPS, 48000)
    write_tone(d / "dialogue.wav", n, 48000, freq=300.0, seed=3)
    write_tone(d / "me.wav", n, 48000, freq=120.0, seed=4, channels=2)
    return d


def manifest(d: Path, name="job.yaml", **dub) -> Path:
    data = {"schema": "dub-film/manifest@1", "film": "film.mp4", "dub": dub or {"dialogue": "dialogue.wav", "me": "me.wav"}}
    (d / name).write_text(yaml.safe_dump(data))
    return d / name


def test_dub_run_end_to_end(job_dir, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "dub.cli", "run", str(manifest(job_dir)), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "audio", "faces.json", "film.dubbed.mp4", "report.json", "shots", "shots.edl", "shots.json", "shots.otio"]
    assert sorted(p.name for p in (out / "shots").iterdir()) == ["shot-0001", "shot-0002", "shot-0003"]

    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == "dub-film/report@1"
    assert [s["frames"] for s in report["shots"]] == [[0, 30], [30, 55], [55, 90]]
    shots = json.loads((out / "shots.json").read_text())
    assert [s["start_timecode"] for s in shots["shots"]] == ["00:00:00:00", "00:00:01:05", "00:00:02:05"]

    src = probe(job_dir / "film.mp4")
    dst = probe(out / "film.dubbed.mp4")
    assert dst.require_video().frame_count == src.require_video().frame_count == 90
    assert dst.require_video().fps == FPS
    worst = min(psnr(a, b) for a, b in zip(FrameReader(job_dir / "film.mp4"), FrameReader(out / "film.dubbed.mp4")))
    assert worst > 45

    # Audio: the dubbed mix, computed here independently, against the decoded output.
    n = samples_for_frames(90, FPS, 48000)
    expected = tone(n, 48000, 300.0, 3)[:, None] + tone(n, 48000, 120.0, 4)[:, None]
    wav = to_wav(out / "film.dubbed.mp4", tmp_path / "decoded.wav")
    got, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    assert sr == 48000 and got.shape[1] == 2
    assert abs(len(got) - n) <= samples_for_frames(1, FPS, 48000)
    m = min(len(got), n)
    for ch in range(2):
        assert np.corrcoef(got[:m, ch], expected[:m, 0])[0, 1] > 0.99


def _run_in_process(manifest_path: Path, out: Path):
    return CliRunner().invoke(app, ["run", str(manifest_path), "--out", str(out)])


def _assert_nothing_left(out: Path):
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize(
    "case,expect",
    [
        ("missing_film", r"nofilm.mp4: no such file"),
        ("not_media", r"notes.mp4: not a readable media file"),
        ("no_video", r"voice.wav: has no video stream"),
        ("dub_short", r"short.wav: dub track is .* shorter by"),
        ("dub_long", r"long.wav: dub track is .* longer by"),
        ("unknown_key", r"bad.yaml: invalid manifest:.*unknown key 'dub.voices'"),
        ("missing_field", r"bad.yaml: invalid manifest:.*missing field 'film'"),
    ],
)
def test_bad_input_is_explained_and_leaves_nothing(job_dir, tmp_path, case, expect):
    d = job_dir
    n = samples_for_frames(90, FPS, 48000)
    if case == "missing_film":
        m = tmp_path / "bad.yaml"
        m.write_text(yaml.safe_dump({"schema": "dub-film/manifest@1", "film": "nofilm.mp4", "dub": {"dialogue": str(d / "dialogue.wav")}}))
    elif case == "not_media":
        (tmp_path / "notes.mp4").write_text("not a film\n" * 100)
        m = tmp_path / "bad.yaml"
        m.write_text(yaml.safe_dump({"schema": "dub-film/manifest@1", "film": "notes.mp4", "dub": {"dialogue": str(d / "dialogue.wav")}}))
    elif case == "no_video":
        write_tone(tmp_path / "voice.wav", n, 48000)
        m = tmp_path / "bad.yaml"
        m.write_text(yaml.safe_dump({"schema": "dub-film/manifest@1", "film": "voice.wav", "dub": {"dialogue": "voice.wav"}}))
    elif case in ("dub_short", "dub_long"):
        name = "short.wav" if case == "dub_short" else "long.wav"
        write_tone(tmp_path / name, n + (-9600 if case == "dub_short" else 9600), 48000)
        m = tmp_path / "bad.yaml"
        m.write_text(yaml.safe_dump({"schema": "dub-film/manifest@1", "film": str(d / "film.mp4"), "dub": {"dialogue": name}}))
    elif case == "unknown_key":
        m = tmp_path / "bad.yaml"
        m.write_text(yaml.safe_dump({"schema": "dub-film/manifest@1", "film": str(d / "film.mp4"), "dub": {"voices": ["a.wav"]}}))
    else:
        m = tmp_path / "bad.yaml"
        m.write_text(yaml.safe_dump({"schema": "dub-film/manifest@1", "dub": {"dialogue": "x.wav"}}))
    out = tmp_path / "out"
    result = _run_in_process(m, out)
    assert result.exit_code != 0
    text = " ".join(result.output.split())
    import re

    assert re.search(expect, text), text[-2000:]
    _assert_nothing_left(out)


def test_existing_output_folder_is_not_touched_by_a_failed_run(job_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("operator's file")
    write_tone(tmp_path / "short.wav", 1000, 48000)
    m = tmp_path / "bad.yaml"
    m.write_text(yaml.safe_dump({"schema": "dub-film/manifest@1", "film": str(job_dir / "film.mp4"), "dub": {"dialogue": "short.wav"}}))
    assert _run_in_process(m, out).exit_code != 0
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_mismatched_sample_rates_are_resampled_and_logged(job_dir, tmp_path):
    n = samples_for_frames(90, FPS, 44100)
    write_tone(tmp_path / "dia44.wav", n, 44100)
    m = tmp_path / "job.yaml"
    m.write_text(yaml.safe_dump({"schema": "dub-film/manifest@1", "film": str(job_dir / "film.mp4"),
                                 "dub": {"dialogue": "dia44.wav", "me": str(job_dir / "me.wav")}}))
    out = tmp_path / "out"
    result = _run_in_process(m, out)
    assert result.exit_code == 0, result.output[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert any("resampled from 44100 Hz to 48000 Hz" in note for note in report["notes"])
    assert report["dub"]["mix"]["sample_rate"] == 48000
    assert probe(out / "film.dubbed.mp4").audio[0].sample_rate == 48000


def test_dub_run_with_lipsync_renders_shots_with_faces(tmp_path):
    """A face shot and a faceless shot; random Wav2Lip weights in the published format; local workers."""
    import torch

    from conftest import shared
    from lipsync.models.wav2lip import Wav2Lip

    grid = shared("grid-talking-faces", "bbaf2n.mpg")
    film = tmp_path / "film.mp4"
    graph = ("[0:v]setpts=PTS-STARTPTS,format=yuv420p[a];color=c=0x336699:s=360x288:r=25,trim=end_frame=40,format=yuv420p[b];"
             "[a][b]concat=n=2:v=1:a=0[v]")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(grid), "-filter_complex", graph, "-map", "[v]",
                    "-c:v", "libx264", "-crf", "16", "-r", "25", str(film)], check=True)
    torch.manual_seed(0)
    ckpt = tmp_path / "wav2lip.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in Wav2Lip().state_dict().items()}}, ckpt)
    m = tmp_path / "job.yaml"
    m.write_text(yaml.safe_dump({
        "schema": "dub-film/manifest@1", "film": "film.mp4",
        "dub": {"dialogue": str(shared("grid-talking-faces", "lwbsza.mpg"))},
        "options": {"lipsync_checkpoint": str(ckpt), "lipsync_backend": "local", "lipsync_device": "cpu",
                    "audio_length_policy": "pad", "speakers": "off"},
    }))
    out = tmp_path / "out"
    result = _run_in_process(m, out)
    assert result.exit_code == 0, result.output[-3000:]
    report = json.loads((out / "report.json").read_text())
    shots = report["shots"]
    assert [s["frames"] for s in shots] == [[0, 75], [75, 115]]
    assert shots[0]["status"] == "rendered" and shots[0]["tracks"][0]["synthesized"] == 75
    assert shots[1]["status"] == "unchanged" and "no face" in shots[1]["reason"]
    assert report["summary"]["rendered"] == 1
    assert probe(out / "film.dubbed.mp4").require_video().frame_count == 115
    assert not (out / "shots" / "shot-0001" / "segment.mkv").exists()  # OUT: deliverables and reports only
    assert cached_segment(shots[0]).exists()  # the one copy of the segment, in the render cache
