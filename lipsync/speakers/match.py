"""Who speaks on screen, and which dubbed track drives which face.

Two assignments, both solved with the Hungarian algorithm on explicit scores:

1. **Original speakers <-> face tracks**, per shot: the affinity of track ``t`` and
   diarized speaker ``s`` is the mean active-speaker evidence of ``t`` over the
   frames where ``s`` talks, minus its mean over the frames where someone else
   talks (so a face that moves its lips all the time, or never, scores near zero).
   Within a shot each speaker takes at most one track and each track at most one
   speaker; a pair below ``min_affinity`` is not linked.  A speaker linked to no
   track in any shot is **off-screen** and drives nothing.
2. **Dubbed tracks <-> original speakers**: by the time overlap of each dub
   track's speech with each original speaker's turns (dubs are cut to the
   picture, so a character's lines sit where the original actor's did); each
   dub track takes at most one speaker.

The operator's word wins: ``overrides`` fix any link (a dub role to a speaker or
to a face track) before the rest is solved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from dubcore.records import FaceTrack, Shot, SpeakerTurn
from dubcore.timebase import FrameRange, sample_to_frame


@dataclass(frozen=True)
class TrackLink:
    """A face track speaking as a diarized original speaker, with the frames where it speaks."""

    track_id: str
    shot_id: str
    speaker: str
    affinity: float
    speaking: tuple[FrameRange, ...]
    source: str = "asd"  # or "override"

    def to_dict(self) -> dict[str, Any]:
        return {
            "track": self.track_id,
            "shot": self.shot_id,
            "speaker": self.speaker,
            "affinity": round(self.affinity, 4),
            "speaking": [r.to_list() for r in self.speaking],
            "source": self.source,
        }


@dataclass(frozen=True)
class DubLink:
    role: str
    speaker: str
    overlap: float  # fraction of the dub track's speech inside the speaker's turns
    source: str = "overlap"  # or "override"


@dataclass(frozen=True)
class Casting:
    """The result: links, off-screen speakers, and per-track drive plans."""

    track_links: tuple[TrackLink, ...]
    dub_links: tuple[DubLink, ...]
    off_screen: tuple[str, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def role_for_speaker(self, speaker: str) -> str | None:
        for link in self.dub_links:
            if link.speaker == speaker:
                return link.role
        return None

    def drives(self) -> dict[str, tuple[str, tuple[FrameRange, ...]]]:
        """``track_id -> (dub role, speaking frame ranges)`` for every track that must speak the dub."""
        out: dict[str, tuple[str, tuple[FrameRange, ...]]] = {}
        for link in self.track_links:
            role = self.role_for_speaker(link.speaker)
            if role is not None and link.speaking:
                out[link.track_id] = (role, link.speaking)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "track_links": [t.to_dict() for t in self.track_links],
            "dub_links": [
                {"role": d.role, "speaker": d.speaker, "overlap": round(d.overlap, 4), "source": d.source} for d in self.dub_links
            ],
            "off_screen": list(self.off_screen),
            "drives": {tid: {"role": role, "speaking": [r.to_list() for r in ranges]} for tid, (role, ranges) in self.drives().items()},
            "notes": list(self.notes),
        }


def turn_frames(turns: Iterable[SpeakerTurn], fps: Fraction, frame_count: int) -> dict[str, np.ndarray]:
    """Per speaker, a boolean mask over the film's frames: True where the speaker talks."""
    masks: dict[str, np.ndarray] = {}
    for turn in turns:
        mask = masks.setdefault(turn.speaker, np.zeros(frame_count, bool))
        a = sample_to_frame(turn.start_sample, fps, turn.sample_rate, "floor")
        b = sample_to_frame(turn.end_sample, fps, turn.sample_rate, "ceil")
        mask[max(0, a) : min(frame_count, b)] = True
    return masks


def ranges_of(mask: np.ndarray, offset: int = 0) -> tuple[FrameRange, ...]:
    """Half-open runs of True in ``mask`` as frame ranges shifted by ``offset``."""
    padded = np.concatenate([[False], mask.astype(bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return tuple(FrameRange(int(a) + offset, int(b) + offset) for a, b in zip(edges[::2], edges[1::2]))


def affinity(scores: np.ndarray, own: np.ndarray, others: np.ndarray) -> float:
    """Mean speaking evidence where the speaker talks minus where others talk (``scores`` are logits)."""
    p = 1.0 / (1.0 + np.exp(-np.asarray(scores, dtype=np.float64)))
    if not own.any():
        return 0.0
    base = float(p[others].mean()) if others.any() else float(p[~own].mean()) if (~own).any() else 0.0
    return float(p[own].mean()) - base


def link_tracks(
    shots: Sequence[Shot],
    tracks: Sequence[FaceTrack],
    scores: Mapping[str, np.ndarray],
    turns: Sequence[SpeakerTurn],
    fps: Fraction,
    frame_count: int,
    *,
    min_affinity: float = 0.15,
    speaking_threshold: float = 0.0,
    track_overrides: Mapping[str, str | None] | None = None,
) -> tuple[TrackLink, ...]:
    """Link face tracks to diarized speakers shot by shot (see the module docstring).

    ``scores[track_id]`` holds one active-speaker logit per frame of the track.  The
    speaking ranges of a link are the frames where the speaker talks *and* the
    track's score exceeds ``speaking_threshold``.  ``track_overrides`` (track id ->
    speaker, or None for "never linked") are taken as given: such a track and its
    speaker leave that shot's assignment; an overridden link speaks wherever its
    speaker talks (the operator said so, whatever the scores).
    """
    masks = turn_frames(turns, fps, frame_count)
    speakers_all = sorted(masks)
    fixed = dict(track_overrides or {})
    links: list[TrackLink] = []
    for shot in shots:
        shot_tracks = [t for t in tracks if t.shot_id == shot.id]
        taken: set[str] = set()
        for t in shot_tracks:
            if t.id in fixed and fixed[t.id] is not None:
                s = str(fixed[t.id])
                own = masks.get(s, np.zeros(frame_count, bool))[t.frames.start : t.frames.end]
                links.append(TrackLink(t.id, shot.id, s, 1.0, ranges_of(own, t.frames.start), "override"))
                taken.add(s)
        shot_tracks = [t for t in shot_tracks if t.id not in fixed]
        speakers = [s for s in speakers_all if s not in taken]
        if not shot_tracks or not speakers:
            continue
        cost = np.zeros((len(shot_tracks), len(speakers)))
        for i, t in enumerate(shot_tracks):
            sl = slice(t.frames.start, t.frames.end)
            anyone = np.zeros(t.frames.duration, bool)
            for s in speakers_all:
                anyone |= masks[s][sl]
            for j, s in enumerate(speakers):
                own = masks[s][sl]
                cost[i, j] = -affinity(scores[t.id], own, anyone & ~own)
        rows, cols = linear_sum_assignment(cost)
        for i, j in zip(rows, cols):
            a = -cost[i, j]
            if a < min_affinity:
                continue
            t, s = shot_tracks[i], speakers[j]
            sl = slice(t.frames.start, t.frames.end)
            speaking = masks[s][sl] & (np.asarray(scores[t.id]) > speaking_threshold)
            links.append(TrackLink(t.id, shot.id, s, a, ranges_of(speaking, t.frames.start)))
    return tuple(links)


def match_dub(
    dub_activity: Mapping[str, Sequence[tuple[int, int]]],
    turns: Sequence[SpeakerTurn],
    *,
    overrides: Mapping[str, str] | None = None,
    min_overlap: float = 0.3,
) -> tuple[DubLink, ...]:
    """Assign dub roles to original speakers by speech overlap (samples at the turns' rate).

    ``dub_activity[role]`` lists the half-open sample ranges where that dub track
    speaks.  ``overrides`` (role -> speaker) are taken as given and removed from
    the assignment.
    """
    overrides = dict(overrides or {})
    links = [DubLink(role, speaker, 1.0, "override") for role, speaker in overrides.items()]
    roles = [r for r in dub_activity if r not in overrides]
    taken = set(overrides.values())
    speakers = sorted({t.speaker for t in turns} - taken)
    if not roles or not speakers:
        return tuple(links)
    by_speaker: dict[str, list[tuple[int, int]]] = {s: [] for s in speakers}
    for t in turns:
        if t.speaker in by_speaker:
            by_speaker[t.speaker].append((t.start_sample, t.end_sample))
    overlap = np.zeros((len(roles), len(speakers)))
    for i, role in enumerate(roles):
        spans = dub_activity[role]
        total = sum(b - a for a, b in spans) or 1
        for j, s in enumerate(speakers):
            inter = sum(max(0, min(b, d) - max(a, c)) for a, b in spans for c, d in by_speaker[s])
            overlap[i, j] = inter / total
    rows, cols = linear_sum_assignment(-overlap)
    for i, j in zip(rows, cols):
        if overlap[i, j] >= min_overlap:
            links.append(DubLink(roles[i], speakers[j], float(overlap[i, j])))
    return tuple(links)


def cast(
    shots: Sequence[Shot],
    tracks: Sequence[FaceTrack],
    scores: Mapping[str, np.ndarray],
    turns: Sequence[SpeakerTurn],
    dub_activity: Mapping[str, Sequence[tuple[int, int]]],
    fps: Fraction,
    frame_count: int,
    *,
    overrides: Mapping[str, str] | None = None,
    track_overrides: Mapping[str, str | None] | None = None,
    min_affinity: float = 0.15,
    min_overlap: float = 0.3,
) -> Casting:
    """Both assignments and the off-screen speakers."""
    track_links = link_tracks(shots, tracks, scores, turns, fps, frame_count, min_affinity=min_affinity,
                              track_overrides=track_overrides)
    dub_links = match_dub(dub_activity, turns, overrides=overrides, min_overlap=min_overlap)
    on_screen = {link.speaker for link in track_links}
    all_speakers = sorted({t.speaker for t in turns})
    off = tuple(s for s in all_speakers if s not in on_screen)
    notes = [f"speaker {s} is never on screen: left alone" for s in off]
    unmatched = sorted(set(dub_activity) - {d.role for d in dub_links})
    notes += [f"dub track {r} matches no original speaker" for r in unmatched]
    return Casting(track_links, dub_links, off, tuple(notes))
