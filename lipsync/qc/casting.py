"""QC of the casting: does the face that was re-voiced speak in the original, and was every speaking face re-voiced?

Lip sync measured on the delivered film says whether a re-voiced mouth follows
its voice; it cannot see that the *wrong* face was re-voiced, or that a face
that talks in the original was left with its original lips under a dubbed
voice.  This check compares two records the pipeline already has:

* the **active-speaker result of the original** (:class:`lipsync.speakers.asd.AsdResult`,
  ``asd.json``): per face track, the frames Light-ASD marks as speaking
  (:attr:`~lipsync.speakers.asd.TrackScores.speaking`, after its median filter
  and its minimum run length);
* the **drives of the speaker plan** (:class:`lipsync.speakers.plan.Drive`): per
  re-voiced face track, its voice and the frames it is driven on.

Per face track of a shot it records ``speaking`` (original speaking frames),
``driven`` (frames driven by a dubbed voice), ``both`` (their overlap) and an
``issue``:

* ``"speaks, not re-voiced"``: the face speaks in the original (at least one
  speaking range, i.e. at least ``min_speech_seconds`` of speech by Light-ASD's
  own rule) and no voice drives it: the dubbed film shows the original lips
  under a dubbed voice, or under a voice nobody was cast for;
* ``"re-voiced, never speaks"``: a voice drives the face although it has no
  speaking frame in the original: most likely the wrong face was re-voiced
  (its neighbour speaks), or the face is a listener.

A re-voiced face whose driven frames and speaking frames only partly overlap
is not flagged: a dub's lines are timed differently from the original's.  No
threshold is added on top of the ASD result's own (its threshold, median and
minimum run length, recorded in asd.json): the check reports what the speaker
stage decided, in frames, so an operator sees *why* a shot is flagged.  A track
that the ASD result does not cover is not judged (``issue`` None,
``speaking`` None).

A flagged face makes its shot at least *review* (:func:`lipsync.qc.report.with_casting`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from dubcore.records import FaceTrack

__all__ = ["CastingCheck", "SPEAKS_NOT_REVOICED", "REVOICED_NEVER_SPEAKS", "casting_checks", "casting_by_shot"]

SPEAKS_NOT_REVOICED = "speaks, not re-voiced"
REVOICED_NEVER_SPEAKS = "re-voiced, never speaks"


@dataclass(frozen=True)
class CastingCheck:
    """The casting of one face track against the original's active-speaker result."""

    track_id: str
    shot_id: str
    voice: str | None  # the voice that drives it, None when none does
    speaking: int | None  # frames Light-ASD marks as speaking in the original (None: track not in the ASD result)
    driven: int  # frames a dubbed voice drives
    both: int  # frames both speaking in the original and driven
    issue: str | None = None

    @property
    def reason(self) -> str | None:
        """The sentence the report shows for a flagged face."""
        if self.issue == SPEAKS_NOT_REVOICED:
            return (f"casting: {self.track_id} speaks in the original ({self.speaking} frames by Light-ASD) "
                    "but no dubbed voice drives it")
        if self.issue == REVOICED_NEVER_SPEAKS:
            return (f"casting: {self.track_id} is re-voiced by {self.voice} ({self.driven} frames) "
                    "but never speaks in the original (0 speaking frames by Light-ASD): wrong face?")
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"track": self.track_id, "shot": self.shot_id, "voice": self.voice, "speaking": self.speaking,
                "driven": self.driven, "both": self.both, "issue": self.issue}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CastingCheck":
        return cls(str(d["track"]), str(d["shot"]), d.get("voice"), None if d.get("speaking") is None else int(d["speaking"]),
                   int(d["driven"]), int(d["both"]), d.get("issue"))


def _frames(ranges: Iterable[Any]) -> set[int]:
    out: set[int] = set()
    for r in ranges:
        out.update(range(int(r.start), int(r.end)))
    return out


def casting_checks(tracks: Sequence[FaceTrack], asd_result: Any, drives: Iterable[Any]) -> tuple[CastingCheck, ...]:
    """One :class:`CastingCheck` per track of ``tracks`` (see the module docstring).

    ``asd_result``: an :class:`~lipsync.speakers.asd.AsdResult` of the original
    (or None: no speaking frames known, nothing flagged); ``drives``: the
    speaker plan's :class:`~lipsync.speakers.plan.Drive` records (any
    iterable; those of other tracks are ignored).
    """
    by_track: dict[str, list[Any]] = {}
    for d in drives:
        by_track.setdefault(d.track_id, []).append(d)
    asd_tracks = {t.track_id: t for t in (asd_result.tracks if asd_result is not None else ())}
    out = []
    for t in tracks:
        mine = by_track.get(t.id, [])
        driven = _frames(r for d in mine for r in d.speaking) & set(range(t.frames.start, t.frames.end))
        voice = mine[0].voice if mine else None
        scores = asd_tracks.get(t.id)
        if scores is None:
            out.append(CastingCheck(t.id, t.shot_id, voice, None, len(driven), 0, None))
            continue
        speaking = _frames(scores.speaking)
        issue = None
        if speaking and not mine:
            issue = SPEAKS_NOT_REVOICED
        elif mine and not speaking:
            issue = REVOICED_NEVER_SPEAKS
        out.append(CastingCheck(t.id, t.shot_id, voice, len(speaking), len(driven), len(speaking & driven), issue))
    return tuple(out)


def casting_by_shot(faces: Iterable[Any], asd_result: Any, drives: Iterable[Any]) -> dict[str, tuple[CastingCheck, ...]]:
    """:func:`casting_checks` of every shot: ``faces`` are the per-shot tracking results (``.shot_id``, ``.tracks``)."""
    drives = list(drives)
    return {r.shot_id: casting_checks(r.tracks, asd_result, drives) for r in faces}


def check_casting(report: Any, faces: Sequence[Any], asd: Any, plan: Any) -> Any:
    """``report`` (a :class:`lipsync.qc.report.QCReport`) with the casting checked on every shot
    (:func:`casting_by_shot`): a face that speaks in the original but was not re-voiced, or a re-voiced
    face that never speaks there, makes its shot at least *review*; the notes say what was not checked."""
    import dataclasses

    from .report import with_casting

    checks = casting_by_shot(faces, asd, plan.drives)
    extra = [] if asd is not None else ["casting not checked: no active-speaker result of the original"]
    if not plan.drives and any(f.tracks for f in faces):
        extra.append("no face was re-voiced in this job: every dubbed voice was left off screen")
    return dataclasses.replace(report, shots=tuple(with_casting(s, checks.get(s.shot_id, ())) for s in report.shots),
                               signals={**report.signals, "notes": [*report.signals.get("notes", []), *extra]})
