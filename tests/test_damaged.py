"""Damaged masters are named as damaged; VFR footage is measured right; healthy files raise no alarm."""

import dataclasses
import subprocess
from fractions import Fraction

import pytest

from dubcore.manifest import DubJob, DubTracks, JobOptions
from lipsync.media import MediaError, probe
import importlib
from lipsync.media.probe import DamagedMediaError, check_tail

probe_module = importlib.import_module("lipsync.media.probe")
from lipsync.pipeline import conform_vfr, preflight

FRAMES = 125  # 5 s at 25 fps, a key frame every second


def _ffmpeg(*args):
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *map(str, args)], check=True)


def _master(path, *extra):
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=5", "-f", "lavfi", "-i", "sine=d=5",
            "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", *extra, path)
    return path


def _cut(src, dst, fraction):
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.fixture(scope="module")
def masters(tmp_path_factory):
    d = tmp_path_factory.mktemp("damaged")
    return {
        "faststart": _master(d / "faststart.mp4", "-movflags", "+faststart"),
        "moov_at_end": _master(d / "moov at end.mp4"),
        "mkv": _master(d / "master.mkv"),
    }


def test_healthy_masters_raise_no_alarm_and_cost_two_ffprobe_calls(masters, monkeypatch):
    calls = []
    real_popen = probe_module.subprocess.Popen

    def popen(cmd, *a, **k):  # subprocess.run goes through Popen too: every child process is counted once
        calls.append(cmd)
        return real_popen(cmd, *a, **k)

    monkeypatch.setattr(probe_module.subprocess, "Popen", popen)
    for path in masters.values():
        calls.clear()
        info = probe(path)
        v = info.require_video()
        assert (v.frame_count, v.fps, v.vfr, v.duration) == (FRAMES, Fraction(25), False, Fraction(5)), path
        assert info.to_dict()["video"]["duration_seconds"] == 5.0
        # One call for the container, one demux pass over the packets (no decode, no second scan).
        assert len(calls) == 2, calls
        assert sum("packet=stream_index,pts,dts,duration,flags" in " ".join(c) for c in calls) == 1
        assert not any("-count_frames" in c for c in calls)
        calls.clear()
        assert check_tail(info) == FRAMES  # preflight decodes one GOP, not the film
        assert len(calls) == 1 and "-read_intervals" in calls[0]


@pytest.mark.parametrize("kind", ["faststart", "moov_at_end", "mkv"])
def test_master_cut_at_60_percent_is_refused_as_truncated(tmp_path, masters, kind):
    src = masters[kind]
    cut = _cut(src, tmp_path / f"cut {src.name}", 0.6)
    with pytest.raises(DamagedMediaError) as err:
        probe(cut)
    text = str(err.value)
    assert str(cut) in text and "truncated" in text and "transfer it again" in text
    readable = err.value.readable_frames
    if kind == "moov_at_end":  # the index is at the end: nothing is decodable without it
        assert readable == 0 and "moov atom" in text and "0 frames are readable" in text
    else:
        assert 30 < readable < FRAMES * 0.7, readable
        assert f"{readable} frame(s)" in text
        # ... and the readable count is what really decodes (ffmpeg, to the end, ignoring errors).
        out = subprocess.run(["ffprobe", "-v", "quiet", "-select_streams", "v:0", "-count_frames", "-show_entries",
                              "stream=nb_read_frames", "-of", "csv=p=0", str(cut)], capture_output=True, text=True).stdout
        assert abs(int(out.strip().rstrip(",")) - readable) <= 1
    # The job is refused at preflight, before any work: never a VFR "conform" of what is left.
    job = DubJob(film=str(cut), dub=DubTracks(dialogue=str(src)),
                 options=JobOptions(vfr_policy="conform", audio_length_policy="pad"))
    with pytest.raises(DamagedMediaError, match="truncated"):
        preflight(job)


def test_damaged_last_gop_is_refused(tmp_path, masters):
    data = bytearray(masters["mkv"].read_bytes())
    start = int(len(data) * 0.93)
    for i in range(start, start + 3000):  # garbage over part of the last GOP
        data[i] = (data[i] * 7 + 13) & 0xFF
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(bytes(data))
    with pytest.raises(DamagedMediaError, match=r"damaged.*\d+ frame\(s\).*are readable") as err:
        preflight(DubJob(film=str(bad), dub=DubTracks(dialogue=str(masters["mkv"]))))
    assert err.value.readable_frames < FRAMES


def test_a_text_file_is_not_reported_as_a_truncated_film(tmp_path):
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a film\n" * 10)
    with pytest.raises(MediaError, match="not a readable media file") as err:
        probe(notes)
    assert not isinstance(err.value, DamagedMediaError)


def test_vfr_footage_is_detected_with_its_true_duration(tmp_path):
    # Phone-style: 30 fps with 3 of every 10 frames dropped (gaps), 6.1 s long.
    dropped = tmp_path / "dropped frames.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x240:r=30:d=6.1", "-f", "lavfi", "-i", "sine=d=6.1",
            "-vf", r"select='not(between(mod(n\,10)\,3\,5))'", "-fps_mode", "vfr", "-c:v", "libx264",
            "-preset", "veryfast", "-c:a", "aac", "-shortest", dropped)
    info = probe(dropped)
    v = info.require_video()
    assert v.vfr is True and v.fps == Fraction(30)
    assert v.frame_count == 129  # 183 frames, 54 dropped
    assert abs(float(v.duration) - 6.1) < 1 / 30 + 1e-9  # not 129 / 30 = 4.3 s
    assert abs(info.to_dict()["video"]["duration_seconds"] - 6.1) < 1 / 30 + 1e-9

    # Mixed frame durations: 1 s at 25 fps, then 25 frames at 12.5 fps.
    mixed = tmp_path / "mixed.mkv"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x120:r=25:d=2", "-vf", "setpts='if(lt(N,25),N,25+(N-25)*2)/(25*TB)'",
            "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "veryfast", mixed)
    m = probe(mixed).require_video()
    assert m.vfr is True and m.frame_count == 50
    assert abs(float(m.duration) - 3.0) <= 2 / 25  # 1 s + 25 x 80 ms, not 50 / 25 = 2 s

    # Conform keeps the whole duration; a conform that would shorten the film is refused, nothing written.
    cfr = conform_vfr(dropped, info, tmp_path / "cfr.mkv")
    c = probe(cfr).require_video()
    assert c.vfr is False and abs(c.frame_count - 183) <= 1
    longer = dataclasses.replace(info, video=dataclasses.replace(v, duration=Fraction(12)))
    with pytest.raises(DamagedMediaError, match="refused rather than delivering a shorter film"):
        conform_vfr(dropped, longer, tmp_path / "short.mkv")
    assert not (tmp_path / "short.mkv").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


@pytest.mark.slow
def test_a_conformed_vfr_film_is_reported_honestly(tmp_path):
    """`dub run` with vfr_policy: conform on phone footage with dropped frames: report.json keeps the source's probe
    and frame count, says what was conformed, and does not claim the delivered frame count matches the source's."""
    import json

    import yaml
    from typer.testing import CliRunner

    from dub.cli import app

    film = tmp_path / "phone clip.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x240:r=30:d=3", "-f", "lavfi", "-i", "sine=d=3",
            "-vf", r"select='not(between(mod(n\,10)\,3\,5))'", "-fps_mode", "vfr", "-c:v", "libx264",
            "-preset", "veryfast", "-c:a", "aac", "-shortest", film)
    source = probe(film).require_video()
    assert source.vfr and source.frame_count == 63  # 90 frames, 27 dropped
    _ffmpeg("-f", "lavfi", "-i", "sine=f=300:d=3", "-ar", "48000", tmp_path / "dub.wav")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"schema": "dub-film/manifest@1", "film": film.name, "dub": {"dialogue": "dub.wav"},
                                   "options": {"vfr_policy": "conform", "audio_length_policy": "pad"}}))
    res = CliRunner().invoke(app, ["run", str(job), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    out = report["output"]
    assert report["film"]["probe"]["video"]["frame_count"] == 63 and report["film"]["probe"]["video"]["vfr"] is True
    assert report["film"]["conformed"]["frame_count"] == out["frame_count"] == 90
    assert out["source_frame_count"] == 63 and out["frame_count_matches_source"] is False
    assert "90 frames" in out["frame_count_note"] and "63" in out["frame_count_note"]
