"""Casting, the evidence: frame masks of who talks when, the speaking face of every frame (step 1), and the
union-find that links faces and voices into characters without joining two faces of one shot (step 2).

Part of :mod:`lipsync.speakers.match` (which re-exports the public names here and whose docstring gives
the rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Mapping, Sequence

import numpy as np

from dubcore.records import FaceTrack, Shot, SpeakerTurn
from dubcore.timebase import FrameRange, sample_to_frame

from .asd_result import smooth_scores
from .match_records import CastingParams

__all__ = ["drop_short_runs", "ranges_of", "span_frames", "turn_frames"]


# --------------------------------------------------------------------------- frame masks, and the character union-find (step 2)


def turn_frames(turns: Iterable[SpeakerTurn], fps: Fraction, frame_count: int) -> dict[str, np.ndarray]:
    """Per speaker, a boolean mask over the film's frames: True where the speaker talks."""
    masks: dict[str, np.ndarray] = {}
    for turn in turns:
        mask = masks.setdefault(turn.speaker, np.zeros(frame_count, bool))
        a = sample_to_frame(turn.start_sample, fps, turn.sample_rate, "floor")
        b = sample_to_frame(turn.end_sample, fps, turn.sample_rate, "ceil")
        mask[max(0, a) : min(frame_count, b)] = True
    return masks


def span_frames(spans: Iterable[tuple[int, int]], rate: int, fps: Fraction, frame_count: int) -> np.ndarray:
    """A boolean mask over the film's frames: True where any half-open sample span (at ``rate``) touches."""
    mask = np.zeros(frame_count, bool)
    for a, b in spans:
        f0 = sample_to_frame(int(a), fps, rate, "floor")
        f1 = sample_to_frame(int(b), fps, rate, "ceil")
        mask[max(0, f0) : min(frame_count, f1)] = True
    return mask


def ranges_of(mask: np.ndarray, offset: int = 0) -> tuple[FrameRange, ...]:
    """Half-open runs of True in ``mask`` as frame ranges shifted by ``offset``."""
    padded = np.concatenate([[False], mask.astype(bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return tuple(FrameRange(int(a) + offset, int(b) + offset) for a, b in zip(edges[::2], edges[1::2]))


def drop_short_runs(mask: np.ndarray, min_len: int) -> np.ndarray:
    out = mask.astype(bool).copy()
    if min_len <= 1:
        return out
    for r in ranges_of(out):
        if r.duration < min_len:
            out[r.start : r.end] = False
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


class _Groups:
    """Union-find over face tracks and speakers that never joins two faces of one shot."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.shots: dict[str, dict[str, str]] = {}  # root -> {shot id: track id}

    def add(self, node: str, shot: str | None = None, track: str | None = None) -> None:
        if node not in self.parent:
            self.parent[node] = node
            self.shots[node] = {shot: track} if shot is not None and track is not None else {}

    def find(self, node: str) -> str:
        while self.parent[node] != node:
            self.parent[node] = self.parent[self.parent[node]]
            node = self.parent[node]
        return node

    def conflict(self, a: str, b: str) -> str | None:
        """The shot in which joining ``a`` and ``b`` would put two faces in one character, if any."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return None
        sa, sb = self.shots[ra], self.shots[rb]
        for shot in set(sa) & set(sb):
            if sa[shot] != sb[shot]:
                return shot
        return None

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            self.shots[ra].update(self.shots.pop(rb))

# --------------------------------------------------------------------------- step 1: the speaking face


@dataclass
class _Face:
    track: FaceTrack
    speaking: np.ndarray  # over the track's frames: this face is the speaking face
    smoothed: np.ndarray  # its median-filtered Light-ASD logits, over the track's frames
    heard: int  # frames of the track with speech heard
    lips: int  # frames where its own filtered score is above the boundary while speech is heard


def _speaking_faces(shots: Sequence[Shot], tracks: Sequence[FaceTrack], scores: Mapping[str, np.ndarray],
                    speech: np.ndarray, competing: set[str], fps: Fraction, params: CastingParams) -> dict[str, _Face]:
    """Step 1 for every track (a non-competing track gets its own evidence but wins no frame)."""
    kernel = params.asd.median_frames(fps)
    min_len = params.asd.min_speech_frames(fps)
    boundary = params.asd.threshold
    faces: dict[str, _Face] = {}
    by_shot: dict[str, list[FaceTrack]] = {}
    for t in tracks:
        by_shot.setdefault(t.shot_id, []).append(t)
    for shot_id, shot_tracks in by_shot.items():
        a = min(t.frames.start for t in shot_tracks)
        b = max(t.frames.end for t in shot_tracks)
        n = b - a
        sm = np.full((len(shot_tracks), n), -np.inf)
        for i, t in enumerate(shot_tracks):
            s = np.asarray(scores.get(t.id, np.full(t.frames.duration, -np.inf)), dtype=np.float64)
            if len(s) != t.frames.duration:
                raise ValueError(f"{t.id}: {len(s)} ASD scores for {t.frames.duration} frames")
            sm[i, t.frames.start - a : t.frames.end - a] = smooth_scores(s, kernel) if np.isfinite(s).all() else s
        heard = speech[a:b]
        live = np.array([t.id in competing for t in shot_tracks])
        comp = np.where(live[:, None], sm, -np.inf)
        winner = np.argmax(comp, axis=0)
        best = comp[winner, np.arange(n)]
        for i, t in enumerate(shot_tracks):
            sl = slice(t.frames.start - a, t.frames.end - a)
            own = sm[i, sl]
            mine = heard[sl] & live[i] & (winner[sl] == i) & (best[sl] > boundary)
            faces[t.id] = _Face(t, drop_short_runs(mine, min_len), own.copy(), int(heard[sl].sum()),
                                int(np.sum(heard[sl] & (own > boundary))))
    return faces
