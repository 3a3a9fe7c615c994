from fractions import Fraction

import pytest

from dubcore.timebase import (
    FrameRange,
    Timecode,
    format_rate,
    frame_to_sample,
    parse_rate,
    sample_to_frame,
    samples_for_frames,
    timecode,
)

RATES = [Fraction(24), Fraction(25), Fraction(24000, 1001), Fraction(30000, 1001), Fraction(60000, 1001)]


@pytest.mark.parametrize(
    "text,expected",
    [("24000/1001", Fraction(24000, 1001)), ("25", Fraction(25)), ("29.97", Fraction(30000, 1001)),
     ("23.976", Fraction(24000, 1001)), ("59.94", Fraction(60000, 1001)), (29.97, Fraction(30000, 1001)), (24, Fraction(24))],
)
def test_parse_rate(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize("bad", ["", "abc", "0", "-25", "25/0"])
def test_parse_rate_rejects(bad):
    with pytest.raises(ValueError):
        parse_rate(bad)


def test_format_rate():
    assert format_rate(Fraction(24000, 1001)) == "24000/1001"
    assert format_rate(Fraction(25)) == "25"


@pytest.mark.parametrize("fps", RATES)
@pytest.mark.parametrize("sr", [16000, 44100, 48000])
def test_frames_to_samples_never_drift_over_three_hours(fps, sr):
    # Reference computed another way: pure integer arithmetic, half-up rounding.
    n, d = fps.numerator, fps.denominator
    three_hours = int(3 * 3600 * fps) + 1
    frames = list(range(0, 5000)) + list(range(three_hours - 5000, three_hours))
    for f in frames:
        ref = (2 * f * sr * d + n) // (2 * n)
        assert frame_to_sample(f, fps, sr) == ref
        # and back: the sample at which a frame starts lies in that frame
        assert sample_to_frame(frame_to_sample(f, fps, sr), fps, sr, "round") == f
    # Shots laid end to end cover the same samples as the whole: no drift at the end.
    cuts = list(range(0, three_hours, 997)) + [three_hours]
    total = sum(frame_to_sample(b, fps, sr) - frame_to_sample(a, fps, sr) for a, b in zip(cuts, cuts[1:]))
    assert total == samples_for_frames(three_hours, fps, sr)


@pytest.mark.parametrize(
    "frame,fps,expected",
    [
        (0, Fraction(25), "00:00:00:00"),
        (90000, Fraction(25), "01:00:00:00"),
        (24, Fraction(24000, 1001), "00:00:01:00"),
        (86400, Fraction(24000, 1001), "01:00:00:00"),
        (1799, Fraction(30000, 1001), "00:00:59;29"),
        (1800, Fraction(30000, 1001), "00:01:00;02"),
        (17982, Fraction(30000, 1001), "00:10:00;00"),
        (17981, Fraction(30000, 1001), "00:09:59;29"),
        (107892, Fraction(30000, 1001), "01:00:00;00"),
        (3600, Fraction(60000, 1001), "00:01:00;04"),
        (215784, Fraction(60000, 1001), "01:00:00;00"),
        (1800, Fraction(30), "00:01:00:00"),
    ],
)
def test_smpte(frame, fps, expected):
    assert timecode(frame, fps) == expected
    assert Timecode.parse(expected, fps).frame == frame


@pytest.mark.parametrize("fps", RATES)
def test_timecode_round_trip(fps):
    for f in list(range(0, 40000, 7)) + [10 * 3600 * 30 - 1]:
        assert Timecode.parse(str(Timecode.from_frame(f, fps)), fps).frame == f


def test_drop_frame_wall_clock():
    # One hour of 29.97 drop-frame timecode is 3600 s of real time within one frame.
    tc = Timecode.parse("01:00:00;00", Fraction(30000, 1001))
    assert abs(float(tc.seconds) - 3600) < 1 / 29.97


def test_invalid_timecodes():
    with pytest.raises(ValueError, match="does not exist"):
        Timecode.parse("00:01:00;00", Fraction(30000, 1001))
    with pytest.raises(ValueError):
        Timecode.parse("00:00:00:25", 25)
    with pytest.raises(ValueError):
        Timecode.parse("00:00:00;10", 25)
    with pytest.raises(ValueError):
        Timecode.from_frame(0, 25, drop_frame=True)


def test_frame_range():
    r = FrameRange(10, 20)
    assert len(r) == 10 and 10 in r and 20 not in r and list(r)[-1] == 19
    assert r.intersection(FrameRange(15, 30)) == FrameRange(15, 20)
    assert r.intersection(FrameRange(20, 30)) is None
    assert r.samples(25, 16000) == (6400, 12800)
    with pytest.raises(ValueError):
        FrameRange(5, 4)
    with pytest.raises(TypeError):
        FrameRange(0.0, 4)  # type: ignore[arg-type]
