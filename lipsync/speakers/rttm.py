"""RTTM files (NIST Rich Transcription Time Marked) and the diarization error rate.

One line per speaker turn::

    SPEAKER <uri> 1 <onset> <duration> <NA> <NA> <speaker> <NA> <NA>

with onset and duration in seconds to 3 decimals.  Both are *derived* from the
turn's exact sample bounds (onset = round(start / rate, 3), duration =
round(end / rate, 3) - onset), so a turn's end in the file is exactly its
rounded end, and reading back at the same sample rate gives the same samples
whenever the bounds are on a whole millisecond (as every rate that divides into
1000 Hz steps: 16 kHz, 44.1 kHz at ms bounds, 48 kHz ...).  A turn whose bounds
are not on a millisecond comes back within half a millisecond (never drifting:
each bound is rounded from its absolute sample index).

:func:`der` scores turns with ``pyannote.metrics``' DiarizationErrorRate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence, Union

from dubcore.records import SpeakerTurn
from dubcore.schema import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from .diarize import Diarization


class RTTMError(ValueError):
    """An RTTM file that cannot be read; the message names the file and the line."""


def turn_id(index: int) -> str:
    """Stable id of the ``index``-th turn (0-based) of a diarization: ``turn-0001`` is the first."""
    return f"turn-{index + 1:04d}"


def _ms(sample: int, sample_rate: int) -> Decimal:
    """Seconds of ``sample``, rounded half up to the millisecond, exactly (no float)."""
    exact = Fraction(int(sample), int(sample_rate))
    return (Decimal(exact.numerator) / Decimal(exact.denominator)).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)


def _sample(seconds: Decimal, sample_rate: int) -> int:
    """Sample index nearest to ``seconds`` (half up), exactly."""
    return int((seconds * int(sample_rate)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _field(value: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"RTTM fields cannot be empty or contain whitespace: {value!r}")
    return value


def rttm_uri(name: str) -> str:
    """The RTTM ``uri`` token of a file called ``name`` (a film's stem, as studios name them).

    RTTM fields are whitespace-separated, so every run of whitespace, control
    characters and quotes becomes one ``_`` (``my film (v2)`` -> ``my_film_(v2)``);
    letters of any script are kept.  Deterministic: the same name always gives the
    same token, and a token is its own uri.  An empty name becomes ``file``.
    """
    import unicodedata

    text = unicodedata.normalize("NFC", str(name))
    out: list[str] = []
    for c in text:
        bad = c.isspace() or unicodedata.category(c).startswith("C") or c in "\"'`"
        if bad:
            if out and out[-1] != "_":
                out.append("_")
        else:
            out.append(c)
    token = "".join(out).strip("_")
    return token or "file"


def format_rttm(uri: str, turns: Iterable[SpeakerTurn]) -> str:
    """The RTTM text of ``turns`` (sorted by start, end, speaker), one ``SPEAKER`` line each.

    ``uri`` is any name (a film's stem with spaces, quotes, any script): it is written
    as :func:`rttm_uri` of it.  Speaker labels must already be single tokens."""
    token = rttm_uri(uri)
    lines = []
    for turn in sorted(turns, key=lambda t: (t.start_sample, t.end_sample, t.speaker)):
        onset = _ms(turn.start_sample, turn.sample_rate)
        duration = _ms(turn.end_sample, turn.sample_rate) - onset
        lines.append(f"SPEAKER {token} 1 {onset} {duration} <NA> <NA> {_field(turn.speaker)} <NA> <NA>\n")
    return "".join(lines)


def write_rttm(path: str | os.PathLike[str], diarization: "Diarization") -> Path:
    """Write ``diarization`` as an RTTM file, atomically (complete or not there at all)."""
    text = format_rttm(diarization.uri, diarization.turns)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


@dataclass(frozen=True)
class RTTMTurn:
    """One ``SPEAKER`` line: the file it names and the turn, in samples."""

    uri: str
    turn: SpeakerTurn


def read_rttm_lines(path: str | os.PathLike[str], sample_rate: int) -> list[RTTMTurn]:
    """Every ``SPEAKER`` line of ``path`` (other line types are skipped), with its uri."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such RTTM file")
    if int(sample_rate) <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate!r}")
    out: list[RTTMTurn] = []
    for lineno, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";;")):
            continue
        fields = line.split()
        if fields[0] != "SPEAKER":
            continue
        if len(fields) < 9:
            raise RTTMError(f"{p}:{lineno}: SPEAKER line has {len(fields)} fields, expected 10: {raw!r}")
        try:
            onset = Decimal(fields[3])
            duration = Decimal(fields[4])
        except ArithmeticError as exc:
            raise RTTMError(f"{p}:{lineno}: onset/duration are not numbers: {raw!r}") from exc
        if not onset.is_finite() or not duration.is_finite() or onset < 0 or duration < 0:
            raise RTTMError(f"{p}:{lineno}: negative or invalid onset/duration: {raw!r}")
        start = _sample(onset, sample_rate)
        end = _sample(onset + duration, sample_rate)
        out.append(RTTMTurn(fields[1], SpeakerTurn(turn_id(len(out)), fields[7], start, end, int(sample_rate))))
    return out


def read_rttm(path: str | os.PathLike[str], sample_rate: int, uri: str | None = None) -> list[SpeakerTurn]:
    """The turns of an RTTM file as :class:`SpeakerTurn` at ``sample_rate``, sorted by start.

    ``uri`` keeps only the lines of that file (an RTTM may describe several): the
    token itself or the real name it was written from (``my film (v2)`` matches
    ``my_film_(v2)``); without it the file must name a single uri.
    """
    rows = read_rttm_lines(path, sample_rate)
    uris = sorted({r.uri for r in rows})
    if uri is None and len(uris) > 1:
        raise RTTMError(f"{path}: describes several files ({', '.join(uris)}); pass uri= to pick one")
    wanted = None if uri is None else {uri, rttm_uri(uri)}
    kept = [r.turn for r in rows if wanted is None or r.uri in wanted]
    kept.sort(key=lambda t: (t.start_sample, t.end_sample, t.speaker))
    return [SpeakerTurn(turn_id(i), t.speaker, t.start_sample, t.end_sample, t.sample_rate) for i, t in enumerate(kept)]


def read_uem(path: str | os.PathLike[str], uri: str | None = None) -> list[tuple[float, float]]:
    """Scored regions of a UEM file (``<uri> <channel> <start> <end>`` lines), in seconds."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such UEM file")
    regions = []
    for lineno, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 4:
            raise RTTMError(f"{p}:{lineno}: UEM line needs '<uri> <channel> <start> <end>': {raw!r}")
        if uri is None or fields[0] == uri:
            regions.append((float(fields[2]), float(fields[3])))
    return regions


# --------------------------------------------------------------------------- pyannote.core bridges

TurnsLike = Union["Diarization", Sequence[SpeakerTurn], Iterable[SpeakerTurn]]
UEMLike = Union[None, tuple[float, float], Sequence[tuple[float, float]], Any]


def _turns_of(value: TurnsLike) -> list[SpeakerTurn]:
    turns = getattr(value, "turns", value)
    return list(turns)


def to_annotation(turns: TurnsLike, uri: str = "file"):  # type: ignore[no-untyped-def]
    """A ``pyannote.core.Annotation`` of ``turns`` (seconds from the exact samples)."""
    from pyannote.core import Annotation, Segment

    annotation = Annotation(uri=getattr(turns, "uri", uri))
    for t in _turns_of(turns):
        if t.end_sample > t.start_sample:
            annotation[Segment(t.start_sample / t.sample_rate, t.end_sample / t.sample_rate), t.id] = t.speaker
    return annotation


def _timeline(uem: UEMLike, uri: str):  # type: ignore[no-untyped-def]
    from pyannote.core import Segment, Timeline

    if uem is None or isinstance(uem, Timeline):
        return uem
    if isinstance(uem, tuple) and len(uem) == 2 and all(isinstance(v, (int, float)) for v in uem):
        uem = [uem]
    return Timeline([Segment(float(a), float(b)) for a, b in uem], uri=uri)


def der(
    reference_turns: TurnsLike,
    hypothesis_turns: TurnsLike,
    collar: float = 0.25,
    skip_overlap: bool = False,
    uem: UEMLike = None,
    detailed: bool = False,
):  # type: ignore[no-untyped-def]
    """Diarization error rate of ``hypothesis_turns`` against ``reference_turns``.

    ``pyannote.metrics.diarization.DiarizationErrorRate`` with the optimal
    (Hungarian) mapping of speaker labels.  ``collar`` is pyannote's: the *total*
    width of the no-score zone centred on every reference boundary (0.25 removes
    0.125 s on each side).  ``uem`` is the scored region: ``(start, end)`` in
    seconds, a list of them, or a ``pyannote.core.Timeline``; None lets pyannote
    approximate it by the extent of both annotations (give the file's extent to
    count false alarms before the first reference turn).  ``detailed=True`` returns
    pyannote's components dict (confusion, missed detection, false alarm, total ...).
    """
    from pyannote.metrics.diarization import DiarizationErrorRate

    reference = to_annotation(reference_turns, uri="file")
    hypothesis = to_annotation(hypothesis_turns, uri="file")
    hypothesis.uri = reference.uri = "file"
    metric = DiarizationErrorRate(collar=collar, skip_overlap=skip_overlap)
    timeline = _timeline(uem, "file")
    if not reference and not hypothesis:
        return {"diarization error rate": 0.0, "total": 0.0} if detailed else 0.0
    components = metric(reference, hypothesis, uem=timeline, detailed=True)
    if detailed:
        return dict(components)
    return float(components["diarization error rate"])
