"""Films named as studios name them: spaces, quotes, parentheses, colons, Japanese, accents, RTL, long.

Every writer of the library (shots.json, CMX 3600 EDL, OpenTimelineIO, RTTM) and every
ffmpeg command line takes the name as it is; formats with restricted characters get a
sanitised identifier and keep the real name where they can.  Nothing is left behind
by a writer that fails.
"""

import json
import shutil
import subprocess
from types import SimpleNamespace

import opentimelineio as otio
import pytest

from dubcore.records import SpeakerTurn
from dubcore.schema import write_json
from lipsync.media import FrameReader, probe
from lipsync.shots import detect_shots, read_shots
from lipsync.shots.export import edl_reel, edl_text, edl_title, write_shot_files
from lipsync.speakers.rttm import read_rttm, read_rttm_lines, rttm_uri, write_rttm

NAMES = [
    "my film (v2)",
    "ファイル name",
    "Café \"Noël\" l'été",
    "فيلم قصير",
    "Ep 1: Pilot",
    "-dash start & [brackets] $HOME ;",
    "長い名前" * 50,  # 200 characters, 600 bytes of UTF-8: beyond NAME_MAX, kept as the folder name
]


@pytest.fixture(scope="module")
def film(tmp_path_factory):
    """2 s at 25 fps, a hard cut at frame 25, with audio: one encode, copied under every name."""
    d = tmp_path_factory.mktemp("names")
    path = d / "plain.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc2=s=160x120:r=25:d=1", "-f", "lavfi", "-i", "mandelbrot=s=160x120:r=25",
                    "-f", "lavfi", "-i", "sine=d=2", "-filter_complex", "[1:v]trim=end_frame=25,setpts=PTS-STARTPTS[b];[0:v][b]concat=n=2:v=1[v]",
                    "-map", "[v]", "-map", "2:a", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    "-shortest", str(path)], check=True)
    return path


def _named(tmp_path, film, name):
    if len(name.encode("utf-8")) > 200:  # a file name is at most 255 bytes: the long name is a folder
        folder = tmp_path / name[:60] / name[60:120]
        folder.mkdir(parents=True)
        dst = folder / (name[:40] + ".mp4")
    else:
        dst = tmp_path / f"{name}.mp4"
    shutil.copyfile(film, dst)
    return dst


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_every_writer_takes_any_name(tmp_path, film, name):
    path = _named(tmp_path, film, name)
    info = probe(path)  # ffprobe and ffmpeg get the name as one argv item, "file:"-prefixed
    assert info.require_video().frame_count == 50
    assert sum(1 for _ in FrameReader(path, info=info, size=(32, 24))) == 50
    shots = detect_shots(path, info=info, min_shot_frames=5)
    assert shots.cuts == [25]

    out = tmp_path / "out"
    written = write_shot_files(shots, out / "shots.json", out / "shots.edl", out / "shots.otio")
    assert sorted(p.name for p in out.iterdir()) == ["shots.edl", "shots.json", "shots.otio"]  # no temporaries
    assert written == [out / "shots.json", out / "shots.edl", out / "shots.otio"]
    assert read_shots(out / "shots.json").source == shots.source

    # EDL: parsed by OpenTimelineIO's CMX 3600 adapter; the clip name is the real file name.
    text = (out / "shots.edl").read_text(encoding="utf-8")
    title = text.splitlines()[0]
    assert title.startswith("TITLE: ") and title.isascii() and len(title) <= len("TITLE: ") + 70
    timeline = otio.adapters.read_from_file(str(out / "shots.edl"), "cmx_3600", rate=25)
    clips = list(timeline.find_clips())
    assert [c.name for c in clips] == [path.name, path.name]
    assert [(c.source_range.start_time.to_frames(), c.source_range.duration.to_frames()) for c in clips] == [(0, 25), (25, 25)]
    reel = edl_reel(path.stem)
    assert len(reel) <= 8 and reel.isascii() and reel.replace("_", "").isalnum()
    assert reel == edl_reel(path.stem)  # deterministic

    # OTIO: the real path, percent-encoded in the URL, comes back exactly.
    tl = otio.adapters.read_from_file(str(out / "shots.otio"))
    from urllib.parse import unquote, urlparse

    url = list(tl.find_clips())[0].media_reference.target_url
    assert unquote(urlparse(url).path) == str(path.resolve())

    # RTTM: the uri is one whitespace-free token, deterministic; read back exactly.
    turns = [SpeakerTurn("turn-0001", "SPK00", 0, 16000, 16000), SpeakerTurn("turn-0002", "SPK01", 16000, 32000, 16000)]
    rttm = write_rttm(out / f"{path.stem}.rttm", SimpleNamespace(uri=path.stem, turns=turns))
    token = rttm_uri(path.stem)
    assert token and not any(c.isspace() for c in token) and token == rttm_uri(path.stem) == rttm_uri(token)
    assert {r.uri for r in read_rttm_lines(rttm, 16000)} == {token}
    assert read_rttm(rttm, 16000) == turns
    assert read_rttm(rttm, 16000, uri=path.stem) == turns  # the real name finds its lines

    # JSON: the name as sent, readable in the file (UTF-8, not \\u escapes).
    report = write_json(out / "report.json", "report", {"film": {"path": str(path)}})
    raw = report.read_text(encoding="utf-8")
    assert str(path) in raw or json.loads(raw)["film"]["path"] == str(path)
    assert json.loads(raw)["film"]["path"] == str(path)


def test_rttm_uri_examples():
    assert rttm_uri("my film (v2)") == "my_film_(v2)"
    assert rttm_uri("ファイル name") == "ファイル_name"
    assert rttm_uri(" a\t\"b\"\n") == "a_b"
    assert rttm_uri("") == "file"


def test_edl_names_follow_cmx_3600():
    assert edl_reel("ファイル") == edl_reel("ファイル") and edl_reel("ファイル").startswith("R")
    assert edl_reel("ファイル") != edl_reel("映画")
    assert edl_reel("Café Noël v2") == "CAFE_NOE"
    assert edl_title("ファイル name") == "name"
    assert edl_title("映画").startswith("FILM ")


def test_shot_files_are_all_or_nothing(tmp_path, film, monkeypatch):
    """A failing OTIO writer leaves no shots.json, no EDL and no temporary (and keeps older files)."""
    path = _named(tmp_path, film, "ファイル name")
    shots = detect_shots(path, min_shot_frames=5)
    out = tmp_path / "out"
    out.mkdir()
    (out / "shots.edl").write_text("older EDL\n")

    import lipsync.shots.export as export

    def broken(p, s):
        raise OSError("disk full")

    monkeypatch.setattr(export, "write_otio", broken)
    with pytest.raises(OSError, match="disk full"):
        write_shot_files(shots, out / "shots.json", out / "shots.edl", out / "shots.otio")
    assert sorted(p.name for p in out.iterdir()) == ["shots.edl"]
    assert (out / "shots.edl").read_text() == "older EDL\n"
    assert "FROM CLIP NAME: ファイル name.mp4" in edl_text(shots)
