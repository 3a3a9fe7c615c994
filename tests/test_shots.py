"""Shot splitting against ground truth: real film cuts, generated cuts at NTSC and PAL rates, fades."""

import subprocess
from fractions import Fraction

import opentimelineio as otio
import pytest

from conftest import shared
from dubcore.schema import read_json
from lipsync.shots import detect_shots, read_shots, write_edl, write_otio, write_shots
from lipsync.media.synth import make_film


def test_big_buck_bunny_cuts_exactly():
    shots = detect_shots(shared("film-scene-cuts", "big_buck_bunny_0_30.webm"))
    assert shots.cuts == [283, 376, 551]
    assert shots.frame_count == 720
    assert [s.start_timecode for s in shots] == ["00:00:00:00", "00:00:11:19", "00:00:15:16", "00:00:22:23"]


def test_chaplin_has_no_cut():
    shots = detect_shots(shared("film-scene-cuts", "chaplin.mp4"))
    assert shots.cuts == [] and len(shots) == 1 and shots.shots[0].frames.duration == 241


@pytest.mark.parametrize(
    "fps,expected_starts",
    [
        (Fraction(24000, 1001), ["00:00:00:00", "00:00:01:16", "00:00:03:01", "00:00:05:13", "00:00:06:06"]),
        (Fraction(25), ["00:00:00:00", "00:00:01:15", "00:00:02:23", "00:00:05:08", "00:00:06:00"]),
    ],
)
def test_generated_cuts_all_found_none_invented(tmp_path, fps, expected_starts):
    film = make_film(tmp_path / "film.mp4", [40, 33, 60, 17, 50], fps=fps)
    shots = detect_shots(film.path)
    assert shots.cuts == [40, 73, 133, 150]
    assert [s.start_timecode for s in shots] == expected_starts
    assert [s.frames.duration for s in shots] == [40, 33, 60, 17, 50]


def test_min_shot_length_merges_close_cuts(tmp_path):
    film = make_film(tmp_path / "film.mp4", [30, 5, 30], fps=Fraction(25))
    assert detect_shots(film.path, min_shot_frames=3).cuts == [30, 35]
    assert detect_shots(film.path, min_shot_frames=10).cuts == [30]


def test_fade_through_black_is_one_cut_and_opening_fade_is_none(tmp_path):
    path = tmp_path / "fades.mp4"
    graph = (
        "testsrc2=s=320x240:r=25,trim=end_frame=60,setpts=PTS-STARTPTS,fade=in:0:12,fade=out:40:16[a];"
        "smptehdbars=s=320x240:r=25,trim=end_frame=60,setpts=PTS-STARTPTS,fade=in:0:16[b];"
        "[a][b]concat=n=2:v=1:a=0,format=yuv420p[v]"
    )
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-filter_complex", graph, "-map", "[v]",
                    "-c:v", "libx264", "-crf", "18", str(path)], check=True)
    shots = detect_shots(path)
    assert len(shots.cuts) == 1
    assert 52 <= shots.cuts[0] <= 66  # inside the black gap between the fade-out and the fade-in
    content_only = detect_shots(path, detectors=["content"])
    assert all(c not in range(0, 12) for c in content_only.cuts)


def test_shot_list_files(tmp_path):
    film = make_film(tmp_path / "film.mp4", [30, 30, 30], fps=Fraction(24000, 1001))
    shots = detect_shots(film.path)
    write_shots(tmp_path / "shots.json", shots)
    data = read_json(tmp_path / "shots.json", "shots")
    assert data["schema"] == "dub-film/shots@1" and data["fps"] == "24000/1001"
    assert read_shots(tmp_path / "shots.json") == shots

    write_edl(tmp_path / "shots.edl", shots)
    edl = (tmp_path / "shots.edl").read_text().splitlines()
    events = [line for line in edl if line[:3].isdigit()]
    assert events[1].split()[-4:] == ["00:00:01:06", "00:00:02:12", "00:00:01:06", "00:00:02:12"]
    assert "FCM: NON-DROP FRAME" in edl

    write_otio(tmp_path / "shots.otio", shots)
    timeline = otio.adapters.read_from_file(str(tmp_path / "shots.otio"))
    clips = list(timeline.find_clips())
    assert [c.name for c in clips] == ["shot-0001", "shot-0002", "shot-0003"]
    assert [round(c.source_range.start_time.value) for c in clips] == [0, 30, 60]
    assert [round(c.source_range.duration.value) for c in clips] == [30, 30, 30]


def test_unknown_detector_is_refused(three_shot_film):
    with pytest.raises(ValueError, match="unknown shot detector"):
        detect_shots(three_shot_film.path, detectors=["magic"])
