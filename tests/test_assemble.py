"""Reassembly: same frames, rate, size, pixel format and colour tags; untouched shots within 45 dB."""

import subprocess
from fractions import Fraction

import numpy as np
import pytest

from conftest import psnr
from lipsync.media import FrameReader, MediaError, probe
from lipsync.media.assemble import assemble, write_segment
from lipsync.media.synth import make_film, write_tone
from lipsync.shots import detect_shots
from dubcore.timebase import FrameRange, samples_for_frames


@pytest.fixture(scope="module")
def tagged_film(tmp_path_factory):
    """A 24000/1001 film tagged BT.709, limited range, with 3 shots."""
    d = tmp_path_factory.mktemp("asm")
    raw = make_film(d / "raw.mp4", [24, 30, 26], fps=Fraction(24000, 1001), audio=False)
    tagged = d / "film.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(raw.path), "-c", "copy",
                    "-bsf:v", "h264_metadata=colour_primaries=1:transfer_characteristics=1:matrix_coefficients=1:video_full_range_flag=0",
                    str(tagged)], check=True)
    return tagged


def test_assembly_keeps_everything_and_replaces_only_the_segment(tmp_path, tagged_film):
    info = probe(tagged_film)
    src = info.require_video()
    assert (src.color_space, src.color_primaries, src.color_transfer) == ("bt709", "bt709", "bt709")
    shots = detect_shots(tagged_film, info=info)
    assert shots.cuts == [24, 54]
    # Re-render shot 2: inverted picture, stored losslessly in the source's pixel format.
    mid = shots.shots[1]
    inverted = [255 - f for f in FrameReader(tagged_film, frames=mid.frames, pix_fmt=src.pix_fmt, info=info)]
    seg = write_segment(tmp_path / "seg.mkv", iter(inverted), like=src, count=mid.frames.duration)
    n = samples_for_frames(src.frame_count, src.fps, 48000)
    write_tone(tmp_path / "mix.wav", n, 48000)
    out = tmp_path / "out.mp4"
    result = assemble(tagged_film, shots, out, audio=tmp_path / "mix.wav", segments={mid.id: seg}, info=info)
    assert result.shots_from_segments == (mid.id,)

    o = probe(out).require_video()
    for attr in ("frame_count", "fps", "width", "height", "pix_fmt", "color_space", "color_primaries", "color_transfer", "color_range"):
        assert getattr(o, attr) == getattr(src, attr), attr

    # Reference: the source's frames, and inside shot 2 the lossless segment's frames.
    segment_frames = iter(FrameReader(seg))
    source_frames = FrameReader(tagged_film, info=info)
    out_frames = FrameReader(out)
    for i, (a, b) in enumerate(zip(source_frames, out_frames)):
        if i in mid.frames:
            a = next(segment_frames)
        assert psnr(a, b) > 45, i
    assert out_frames.frames_read == src.frame_count


def test_segment_that_does_not_fit_is_refused_and_nothing_written(tmp_path, tagged_film):
    info = probe(tagged_film)
    src = info.require_video()
    shots = detect_shots(tagged_film, info=info)
    short = FrameRange(0, shots.shots[0].frames.duration - 1)
    seg = write_segment(tmp_path / "seg.mkv", FrameReader(tagged_film, frames=short, pix_fmt=src.pix_fmt, info=info),
                        like=src, count=short.duration)
    out = tmp_path / "out.mp4"
    with pytest.raises(MediaError, match="seg.mkv: segment for shot-0001 does not fit: 23 frames, shot has 24"):
        assemble(tagged_film, shots, out, audio=None, segments={"shot-0001": seg}, info=info)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.mkv"]


def test_rotation_is_kept(tmp_path, three_shot_film):
    rotated = tmp_path / "rot.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(three_shot_film.path), "-c", "copy",
                    "-metadata:s:v:0", "rotate=90", str(rotated)], check=True)
    info = probe(rotated)
    assert info.require_video().rotation == 90
    shots = detect_shots(rotated, info=info)
    out = tmp_path / "out.mp4"
    assemble(rotated, shots, out, audio=None, info=info)
    o = probe(out).require_video()
    assert (o.rotation, o.frame_count, o.width, o.height) == (90, 90, 320, 240)
