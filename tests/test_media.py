"""probe, streamed decode/encode: exact counts, exact ranges, clear errors, atomic outputs."""

import hashlib
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from conftest import shared
from dubcore.timebase import FrameRange
from lipsync.media import EncodeSettings, FrameReader, FrameWriter, MediaError, probe
from lipsync.media.synth import make_film


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def test_probe_shared_clips():
    bbb = probe(shared("film-scene-cuts", "big_buck_bunny_0_30.webm")).require_video()
    assert (bbb.frame_count, bbb.fps, bbb.width, bbb.height, bbb.vfr) == (720, Fraction(24), 1280, 720, False)
    chaplin = probe(shared("film-scene-cuts", "chaplin.mp4"))
    assert chaplin.require_video().frame_count == 241
    assert chaplin.audio[0].sample_rate == 44100
    grid = probe(shared("grid-talking-faces", "bbaf2n.mpg")).require_video()
    assert (grid.frame_count, grid.fps) == (75, Fraction(25))


def test_probe_errors_name_the_file(tmp_path):
    with pytest.raises(MediaError, match="missing.mp4: no such file"):
        probe(tmp_path / "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a film\n" * 10)
    with pytest.raises(MediaError, match="notes.mp4: not a readable media file"):
        probe(text)
    wav = tmp_path / "voice.wav"
    _ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=1", str(wav))
    with pytest.raises(MediaError, match="voice.wav: has no video stream"):
        probe(wav).require_video()


def test_probe_detects_vfr_and_rotation(tmp_path):
    vfr = tmp_path / "vfr.mp4"
    # Frames 0-24 at 25 fps, then 25 frames at 12.5 fps: a real variable-rate file.
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x120:r=25:d=2", "-vf",
            "setpts='if(lt(N,25),N,25+(N-25)*2)/(25*TB)'", "-fps_mode", "vfr", "-c:v", "libx264", str(vfr))
    assert probe(vfr).require_video().vfr is True
    plain, cfr = tmp_path / "plain.mp4", tmp_path / "cfr.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x120:r=25:d=1", "-c:v", "libx264", str(plain))
    _ffmpeg("-i", str(plain), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(cfr))
    v = probe(cfr).require_video()
    assert v.vfr is False and v.rotation == 90 and v.display_size == (120, 160)


def _digest(frames) -> list[str]:
    return [hashlib.sha1(f.tobytes()).hexdigest() for f in frames]


@pytest.mark.parametrize("fps", [Fraction(24000, 1001), Fraction(25)])
def test_range_decode_is_frame_exact(tmp_path, fps):
    film = make_film(tmp_path / "f.mp4", [20, 30, 25], fps=fps)
    with FrameReader(film.path) as reader:
        full = _digest(reader)
    assert len(full) == 75
    for start, end in [(0, 5), (20, 50), (49, 51), (74, 75), (33, 33)]:
        part = _digest(FrameReader(film.path, frames=FrameRange(start, end)))
        assert part == full[start:end], (start, end)


def test_range_decode_webm_with_start_offset():
    # BBB's video starts at pts 0.003 s: seeking must still land on the exact frame.
    path = shared("film-scene-cuts", "big_buck_bunny_0_30.webm")
    size = (128, 72)
    full = _digest(FrameReader(path, size=size, frames=FrameRange(270, 300)))
    again = _digest(FrameReader(path, size=size, frames=FrameRange(283, 290)))
    assert again == full[13:20]


def test_reader_rejects_ranges_past_the_end(three_shot_film):
    with pytest.raises(MediaError, match="has 90 frames"):
        FrameReader(three_shot_film.path, frames=FrameRange(80, 95))


def test_truncated_file_is_an_error_not_a_short_shot(tmp_path, three_shot_film):
    data = three_shot_film.path.read_bytes()
    cut = tmp_path / "cut.mkv"
    # Remux to Matroska (no index needed at the end), then chop the file in half.
    _ffmpeg("-i", str(three_shot_film.path), "-c", "copy", str(cut))
    blob = cut.read_bytes()
    cut.write_bytes(blob[: len(blob) // 2])
    reader = FrameReader(cut, frames=FrameRange(0, 90), info=probe(three_shot_film.path))
    with pytest.raises(MediaError, match="decoding stopped"):
        list(reader)
    assert data  # the source itself is untouched


def test_writer_is_atomic_and_exact(tmp_path):
    out = tmp_path / "o.mkv"
    frame = np.full((48, 64, 3), 128, np.uint8)
    with pytest.raises(RuntimeError):
        with FrameWriter(out, width=64, height=48, fps=Fraction(25), pix_fmt="bgr24") as w:
            w.write(frame)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MediaError, match="2 frames written, 3 expected"):
        with FrameWriter(out, width=64, height=48, fps=Fraction(25), pix_fmt="bgr24", expected_frames=3) as w:
            w.write(frame)
            w.write(frame)
    assert list(tmp_path.iterdir()) == []
    with FrameWriter(out, width=64, height=48, fps=Fraction(30000, 1001), pix_fmt="bgr24",
                     settings=EncodeSettings(codec="ffv1", crf=None, preset=None)) as w:
        for _ in range(7):
            w.write(frame)
    v = probe(out).require_video()
    assert (v.frame_count, v.fps) == (7, Fraction(30000, 1001))
    decoded = list(FrameReader(out))
    assert all(np.array_equal(f, frame) for f in decoded)


def test_writer_rejects_wrong_frame_size(tmp_path):
    with pytest.raises(MediaError, match="expected 9216"):
        with FrameWriter(tmp_path / "o.mkv", width=64, height=48, fps=Fraction(25), pix_fmt="bgr24") as w:
            w.write(np.zeros((10, 10, 3), np.uint8))
    assert not (tmp_path / "o.mkv").exists()
