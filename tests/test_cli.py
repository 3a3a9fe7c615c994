"""The `dub` subcommands used alone on a file, and VFR handling."""

import json
import subprocess
from fractions import Fraction

from typer.testing import CliRunner

from conftest import shared
from dub.cli import app
from dubcore.manifest import DubJob, DubTracks, JobOptions
from lipsync.media import MediaError, probe
from lipsync.pipeline import conform_vfr, preflight

runner = CliRunner()


def test_dub_probe_prints_versioned_json(three_shot_film, tmp_path):
    result = runner.invoke(app, ["probe", str(three_shot_film.path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["schema"] == "dub-film/probe@1"
    assert data["video"]["frame_count"] == 90 and data["video"]["fps"] == "25"
    assert runner.invoke(app, ["probe", str(three_shot_film.path), "--out", str(tmp_path / "p.json")]).exit_code == 0
    assert json.loads((tmp_path / "p.json").read_text())["video"]["width"] == 320


def test_dub_probe_error_is_one_clear_line(tmp_path):
    result = runner.invoke(app, ["probe", str(tmp_path / "absent.mov")])
    assert result.exit_code == 2
    assert "absent.mov: no such file" in result.output and "Traceback" not in result.output


def test_dub_shots_writes_json_edl_otio(tmp_path):
    film = shared("film-scene-cuts", "big_buck_bunny_0_30.webm")
    out = tmp_path / "shots.json"
    result = runner.invoke(app, ["shots", str(film), "--out", str(out), "--edl", str(tmp_path / "s.edl"), "--otio", str(tmp_path / "s.otio")])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["schema"] == "dub-film/shots@1"
    assert [s["frames"][0] for s in data["shots"]] == [0, 283, 376, 551]
    assert "shot-0002  00:00:11:19 - 00:00:15:16" in result.stdout
    assert (tmp_path / "s.edl").read_text().count("* FROM CLIP NAME") == 4
    assert (tmp_path / "s.otio").exists()


def _vfr_film(tmp_path):
    path = tmp_path / "vfr.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=s=160x120:r=25:d=2",
                    "-f", "lavfi", "-i", "sine=d=2", "-vf", "setpts='if(lt(N,25),N,25+(N-25)*2)/(25*TB)'",
                    "-fps_mode", "vfr", "-c:v", "libx264", "-shortest", str(path)], check=True)
    return path


def test_vfr_is_refused_by_default_and_conformed_on_request(tmp_path):
    film = _vfr_film(tmp_path)
    job = DubJob(film=str(film), dub=DubTracks(dialogue=str(film)))
    try:
        preflight(job)
        raise AssertionError("VFR film was accepted")
    except MediaError as exc:
        assert "vfr.mp4: variable frame rate" in str(exc) and "vfr_policy: conform" in str(exc)
    job = job.model_copy(update={"options": JobOptions(vfr_policy="conform")})
    pre = preflight(job)
    assert any("conformed" in n for n in pre.notes)
    cfr = conform_vfr(film, pre.info, tmp_path / "cfr.mkv")
    v = probe(cfr).require_video()
    # 25 frames in the first second, 25 frames spread over the next two seconds -> 75 frames at 25 fps CFR.
    assert (v.vfr, v.fps) == (False, Fraction(25))
    assert abs(v.frame_count - 75) <= 1
