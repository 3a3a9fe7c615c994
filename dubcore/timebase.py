"""Exact time: rational frame rates, integer frames and samples, SMPTE timecode.

Every time in dub-film is an integer index (a frame or an audio sample) together
with an exact rational rate.  Seconds are derived for display only; they are never
the source of truth.  Conversions go through :class:`fractions.Fraction`, always
from the absolute index, so nothing accumulates and nothing drifts however long
the film is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, Union

RateLike = Union[Fraction, int, float, str]

#: The frame rates a studio actually delivers.  Anything else is accepted but logged
#: by the media layer.
STANDARD_RATES: tuple[Fraction, ...] = (
    Fraction(24000, 1001),
    Fraction(24),
    Fraction(25),
    Fraction(30000, 1001),
    Fraction(30),
    Fraction(48),
    Fraction(50),
    Fraction(60000, 1001),
    Fraction(60),
)

_NTSC_FLOATS = {round(float(r), 3): r for r in STANDARD_RATES}


def parse_rate(value: RateLike) -> Fraction:
    """Parse a frame or sample rate into an exact positive :class:`Fraction`.

    Accepts ``Fraction``, ``int``, strings such as ``"24000/1001"``, ``"25"`` or
    ``"29.97"``, and floats.  Floats and decimal strings that are within 1e-3 of an
    NTSC rate snap to the exact NTSC fraction (29.97 -> 30000/1001), because a float
    can never represent those rates exactly.
    """
    if isinstance(value, Fraction):
        rate = value
    elif isinstance(value, int):
        rate = Fraction(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("empty rate string; give e.g. '24000/1001' or '25'")
        if "/" in text:
            num, _, den = text.partition("/")
            try:
                rate = Fraction(int(num), int(den))
            except (ValueError, ZeroDivisionError) as exc:
                raise ValueError(f"invalid rate {value!r}; give e.g. '24000/1001'") from exc
        else:
            try:
                rate = Fraction(text)
            except ValueError as exc:
                raise ValueError(f"invalid rate {value!r}; give e.g. '25' or '24000/1001'") from exc
            if rate.denominator != 1:
                rate = _NTSC_FLOATS.get(round(float(rate), 3), rate)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"invalid rate {value!r}")
        snapped = _NTSC_FLOATS.get(round(value, 3))
        rate = snapped if snapped is not None else Fraction(value).limit_denominator(1001)
    else:
        raise TypeError(f"cannot interpret {value!r} as a rate")
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {value!r}")
    return rate


def format_rate(rate: Fraction) -> str:
    """``Fraction(24000, 1001)`` -> ``"24000/1001"``; ``Fraction(25)`` -> ``"25"``."""
    rate = parse_rate(rate)
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


# --------------------------------------------------------------------------- frames and samples


def frame_to_seconds(frame: int, fps: RateLike) -> Fraction:
    """Exact start time of ``frame`` (0-based) in seconds."""
    return Fraction(int(frame)) / parse_rate(fps)


def seconds_to_frame(seconds: Fraction | int | float | str, fps: RateLike, rounding: str = "floor") -> int:
    """Frame index containing (``floor``), nearest to (``round``) or after (``ceil``) ``seconds``."""
    exact = Fraction(seconds) * parse_rate(fps)
    return _round(exact, rounding)


def frame_to_sample(frame: int, fps: RateLike, sample_rate: int, rounding: str = "round") -> int:
    """Audio sample index at which video ``frame`` starts.

    Computed from the absolute frame index with exact arithmetic, so frame
    1,000,000 at 24000/1001 fps lands on the same sample as a direct calculation,
    with no accumulated error.  ``rounding`` is ``"round"`` (half up), ``"floor"``
    or ``"ceil"``.
    """
    exact = Fraction(int(frame)) * int(sample_rate) / parse_rate(fps)
    return _round(exact, rounding)


def sample_to_frame(sample: int, fps: RateLike, sample_rate: int, rounding: str = "floor") -> int:
    """Video frame that contains audio ``sample`` (``floor``), or the nearest one (``round``)."""
    exact = Fraction(int(sample)) * parse_rate(fps) / int(sample_rate)
    return _round(exact, rounding)


def samples_for_frames(frame_count: int, fps: RateLike, sample_rate: int) -> int:
    """Number of audio samples that exactly covers ``frame_count`` frames (rounded half up)."""
    return frame_to_sample(frame_count, fps, sample_rate, "round")


def _round(value: Fraction, rounding: str) -> int:
    if rounding == "floor":
        return math.floor(value)
    if rounding == "ceil":
        return math.ceil(value)
    if rounding == "round":
        # Half up, not banker's rounding: deterministic and monotone.
        return math.floor(value + Fraction(1, 2))
    raise ValueError(f"rounding must be 'floor', 'ceil' or 'round', got {rounding!r}")


# --------------------------------------------------------------------------- frame ranges


@dataclass(frozen=True, order=True)
class FrameRange:
    """Half-open range of frames ``[start, end)``.  ``end`` is never inside the range."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not isinstance(self.start, int) or not isinstance(self.end, int):
            raise TypeError(f"FrameRange bounds must be int, got {self.start!r}, {self.end!r}")
        if self.start < 0 or self.end < self.start:
            raise ValueError(f"invalid FrameRange [{self.start}, {self.end}): need 0 <= start <= end")

    @property
    def duration(self) -> int:
        return self.end - self.start

    def __len__(self) -> int:
        return self.end - self.start

    def __contains__(self, frame: object) -> bool:
        return isinstance(frame, int) and self.start <= frame < self.end

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end))

    def overlaps(self, other: "FrameRange") -> bool:
        return self.start < other.end and other.start < self.end

    def intersection(self, other: "FrameRange") -> "FrameRange | None":
        start, end = max(self.start, other.start), min(self.end, other.end)
        return FrameRange(start, end) if start < end else None

    def samples(self, fps: RateLike, sample_rate: int) -> tuple[int, int]:
        """Half-open audio sample range ``[s0, s1)`` covering these frames."""
        return (
            frame_to_sample(self.start, fps, sample_rate),
            frame_to_sample(self.end, fps, sample_rate),
        )

    def to_list(self) -> list[int]:
        return [self.start, self.end]

    @classmethod
    def from_list(cls, value: list[int] | tuple[int, int]) -> "FrameRange":
        start, end = value
        return cls(int(start), int(end))


# --------------------------------------------------------------------------- SMPTE timecode


def is_drop_frame_rate(fps: RateLike) -> bool:
    """True for the NTSC rates whose SMPTE timecode is drop-frame by convention."""
    rate = parse_rate(fps)
    return rate.denominator == 1001 and rate.numerator in (30000, 60000)


def _nominal(fps: Fraction) -> int:
    """The integer counting base of a timecode (24000/1001 counts in 24s)."""
    return math.ceil(fps) if fps.denominator != 1 else fps.numerator


@dataclass(frozen=True)
class Timecode:
    """An SMPTE timecode for a frame index at a frame rate.

    Non-drop timecode counts frames at the nominal integer rate (so 24000/1001
    material reads 24 frames a second, as every editor shows it).  Drop-frame
    timecode (30000/1001 and 60000/1001 by default) skips frame numbers 0-1
    (0-3 at 60000/1001) at the start of every minute except each tenth, which keeps
    the timecode within a few frames of wall-clock time; the separator before the
    frames field is ``;``.
    """

    frame: int
    fps: Fraction
    drop_frame: bool

    @classmethod
    def from_frame(cls, frame: int, fps: RateLike, drop_frame: bool | None = None) -> "Timecode":
        rate = parse_rate(fps)
        if frame < 0:
            raise ValueError(f"timecode frame must be >= 0, got {frame}")
        drop = is_drop_frame_rate(rate) if drop_frame is None else drop_frame
        if drop and not (rate.denominator == 1001 and _nominal(rate) % 30 == 0):
            raise ValueError(f"drop-frame timecode is only defined for 30000/1001 and 60000/1001, not {rate}")
        return cls(int(frame), rate, drop)

    @classmethod
    def parse(cls, text: str, fps: RateLike) -> "Timecode":
        """Parse ``HH:MM:SS:FF`` (non-drop) or ``HH:MM:SS;FF`` (drop-frame)."""
        rate = parse_rate(fps)
        raw = text.strip()
        drop = ";" in raw
        parts = raw.replace(";", ":").split(":")
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            raise ValueError(f"invalid timecode {text!r}; expected HH:MM:SS:FF or HH:MM:SS;FF")
        hh, mm, ss, ff = (int(p) for p in parts)
        nominal = _nominal(rate)
        if mm >= 60 or ss >= 60 or ff >= nominal:
            raise ValueError(f"timecode {text!r} out of range at {format_rate(rate)} fps")
        total_minutes = hh * 60 + mm
        frame = (total_minutes * 60 + ss) * nominal + ff
        if drop:
            if not is_drop_frame_rate(rate):
                raise ValueError(f"drop-frame timecode {text!r} given for {format_rate(rate)} fps")
            dropped = nominal // 15  # 2 at 29.97, 4 at 59.94
            if ss == 0 and ff < dropped and mm % 10 != 0:
                raise ValueError(f"timecode {text!r} does not exist in drop-frame (frames are skipped)")
            frame -= dropped * (total_minutes - total_minutes // 10)
        return cls(frame, rate, drop)

    def __str__(self) -> str:
        nominal = _nominal(self.fps)
        frame = self.frame
        if self.drop_frame:
            dropped = nominal // 15
            per_minute = nominal * 60 - dropped
            per_ten = nominal * 600 - dropped * 9
            tens, rem = divmod(frame, per_ten)
            # The first minute of every ten keeps all its numbers.
            if rem < nominal * 60:
                extra = 0
            else:
                extra = dropped * ((rem - nominal * 60) // per_minute + 1)
            frame = frame + dropped * 9 * tens + extra
        ff = frame % nominal
        total_seconds = frame // nominal
        ss = total_seconds % 60
        mm = (total_seconds // 60) % 60
        hh = total_seconds // 3600
        sep = ";" if self.drop_frame else ":"
        return f"{hh:02d}:{mm:02d}:{ss:02d}{sep}{ff:02d}"

    @property
    def seconds(self) -> Fraction:
        """Exact wall-clock time of the frame (not the timecode's nominal reading)."""
        return frame_to_seconds(self.frame, self.fps)


def timecode(frame: int, fps: RateLike, drop_frame: bool | None = None) -> str:
    """Shorthand: SMPTE string of ``frame`` at ``fps``."""
    return str(Timecode.from_frame(frame, fps, drop_frame))
