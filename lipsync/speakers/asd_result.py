"""Active speaker detection, the decisions and the record: parameters, speaking ranges, asd.json.

Part of :mod:`lipsync.speakers.asd` (which re-exports every public name here and
whose docstring describes the rules): :class:`AsdParams`, the median filter and
speaking ranges (:func:`smooth_scores`, :func:`speaking_ranges`), the per-track
and per-film records (:class:`TrackScores`, :class:`AsdResult`) and asd.json
(``dub-film/asd@1``, :meth:`AsdResult.write`, :func:`read_asd`).  No torch here.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from dubcore.records import FaceTrack
from dubcore.schema import SchemaError, read_json, write_json
from dubcore.timebase import FrameRange, RateLike, format_rate, parse_rate

__all__ = [
    "AsdParams",
    "AsdResult",
    "KIND",
    "TrackScores",
    "read_asd",
    "smooth_scores",
    "speaking_ranges",
]

KIND = "asd"


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class AsdParams:
    """How scores are computed and turned into speaking ranges (see :mod:`lipsync.speakers.asd`)."""

    durations: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    frontend: Literal["track", "window"] = "track"
    chunk_frames: int = 100  # encoder chunk (model frames) with frontend="track"
    threshold: float = 0.0
    median_seconds: float = 0.2
    min_speech_seconds: float = 0.2

    def __post_init__(self) -> None:
        if not self.durations or any(int(d) <= 0 for d in self.durations):
            raise ValueError(f"AsdParams.durations must be positive seconds, got {self.durations}")
        if self.frontend not in ("track", "window"):
            raise ValueError(f"AsdParams.frontend must be 'track' or 'window', got {self.frontend!r}")
        if self.chunk_frames < 8:
            raise ValueError(f"AsdParams.chunk_frames must be >= 8, got {self.chunk_frames}")

    def median_frames(self, fps: RateLike) -> int:
        """Median filter length in frames at ``fps``: odd, at least 1."""
        k = max(1, int(round(self.median_seconds * float(parse_rate(fps)))))
        return k if k % 2 else k + 1

    def min_speech_frames(self, fps: RateLike) -> int:
        return max(1, int(math.ceil(self.min_speech_seconds * float(parse_rate(fps)) - 1e-9)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["durations"] = list(self.durations)
        return d


# --------------------------------------------------------------------------- decisions


def smooth_scores(scores: np.ndarray, kernel: int) -> np.ndarray:
    """Running median of ``kernel`` (odd) frames, edges repeated."""
    from scipy.ndimage import median_filter

    x = np.asarray(scores, dtype=np.float64)
    if kernel <= 1 or len(x) == 0:
        return x.copy()
    return median_filter(x, size=int(kernel), mode="nearest")


def speaking_ranges(scores: np.ndarray, first_frame: int, fps: RateLike, params: AsdParams = AsdParams()) -> tuple[FrameRange, ...]:
    """Half-open frame ranges where the median-filtered score is above the threshold for at least the minimum duration."""
    smoothed = smooth_scores(scores, params.median_frames(fps))
    on = smoothed > params.threshold
    min_len = params.min_speech_frames(fps)
    ranges = []
    i, n = 0, len(on)
    while i < n:
        if not on[i]:
            i += 1
            continue
        j = i
        while j < n and on[j]:
            j += 1
        if j - i >= min_len:
            ranges.append(FrameRange(first_frame + i, first_frame + j))
        i = j
    return tuple(ranges)


@dataclass(frozen=True)
class TrackScores:
    """Scores of one track: raw, median-filtered, and the speaking ranges derived from them."""

    track_id: str
    shot_id: str
    frames: FrameRange
    scores: tuple[float, ...]
    smoothed: tuple[float, ...]
    speaking: tuple[FrameRange, ...]

    def __post_init__(self) -> None:
        if len(self.scores) != self.frames.duration or len(self.smoothed) != self.frames.duration:
            raise ValueError(f"track {self.track_id}: {len(self.scores)} scores for {self.frames.duration} frames")

    def score_at(self, frame: int, smoothed: bool = True) -> float | None:
        if frame not in self.frames:
            return None
        return (self.smoothed if smoothed else self.scores)[frame - self.frames.start]

    def is_speaking(self, frame: int) -> bool:
        return any(frame in r for r in self.speaking)

    def to_dict(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "shot_id": self.shot_id,
            "frames": self.frames.to_list(),
            "scores": [round(float(s), 4) for s in self.scores],
            "smoothed": [round(float(s), 4) for s in self.smoothed],
            "speaking": [r.to_list() for r in self.speaking],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrackScores":
        return cls(
            track_id=str(data["track_id"]),
            shot_id=str(data["shot_id"]),
            frames=FrameRange.from_list(data["frames"]),
            scores=tuple(float(s) for s in data["scores"]),
            smoothed=tuple(float(s) for s in data["smoothed"]),
            speaking=tuple(FrameRange.from_list(r) for r in data["speaking"]),
        )


@dataclass(frozen=True)
class AsdResult:
    """Active-speaker scores of a film's face tracks; written as ``dub-film/asd@1``."""

    source: str
    fps: Fraction
    frame_count: int
    tracks: tuple[TrackScores, ...]
    params: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_scores(
        cls,
        source: str,
        fps: RateLike,
        frame_count: int,
        tracks: Sequence[FaceTrack],
        scores: Mapping[str, np.ndarray],
        params: AsdParams = AsdParams(),
        model: Mapping[str, Any] | None = None,
    ) -> "AsdResult":
        rate = parse_rate(fps)
        kernel = params.median_frames(rate)
        items = []
        for t in tracks:
            if t.id not in scores:
                continue
            s = np.asarray(scores[t.id], dtype=np.float64)
            items.append(
                TrackScores(
                    track_id=t.id,
                    shot_id=t.shot_id,
                    frames=t.frames,
                    scores=tuple(float(v) for v in s),
                    smoothed=tuple(float(v) for v in smooth_scores(s, kernel)),
                    speaking=speaking_ranges(s, t.frames.start, rate, params),
                )
            )
        return cls(source=str(source), fps=rate, frame_count=int(frame_count), tracks=tuple(items),
                   params=params.to_dict(), model=dict(model or {}))

    def track(self, track_id: str) -> TrackScores:
        for t in self.tracks:
            if t.track_id == track_id:
                return t
        raise KeyError(f"no track {track_id!r} in the ASD result of {self.source}")

    def speaker_at(self, frame: int, speech: bool | None = None) -> str | None:
        """The track speaking at ``frame``, or None.

        * ``speech=None`` (nothing known about the audio): among the tracks marked
          speaking at ``frame`` (:attr:`TrackScores.speaking`), the one with the
          highest filtered score; None when no track is marked speaking.
        * ``speech=True`` (the caller knows a voice is heard at ``frame``, e.g.
          from diarization or a stem's voice activity, and that it belongs on
          screen): the visible track with the highest filtered score, whatever its
          sign.  The ranking of faces stays right where the absolute score dips
          below the threshold, e.g. in the quiet tail of a word.  Whether a voice
          belongs on screen at all is the matcher's call
          (:mod:`lipsync.speakers.match`), not this rule's.
        * ``speech=False``: None.
        """
        if speech is False:
            return None
        best, best_score = None, -math.inf
        for t in self.tracks:
            if speech or t.is_speaking(frame):
                s = t.score_at(frame)
                if s is not None and s > best_score:
                    best, best_score = t.track_id, s
        return best

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "fps": format_rate(self.fps),
            "frame_count": self.frame_count,
            "model": self.model,
            "params": self.params,
            "tracks": [t.to_dict() for t in self.tracks],
        }

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write asd.json atomically."""
        return write_json(path, KIND, self.to_dict())


def read_asd(path: str | os.PathLike[str]) -> AsdResult:
    """Read asd.json (:class:`~dubcore.schema.SchemaError` naming the file when it is not one)."""
    data = read_json(path, KIND)
    try:
        return AsdResult(
            source=str(data["source"]),
            fps=parse_rate(data["fps"]),
            frame_count=int(data["frame_count"]),
            tracks=tuple(TrackScores.from_dict(t) for t in data["tracks"]),
            params=dict(data.get("params") or {}),
            model=dict(data.get("model") or {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"{path}: invalid asd file ({type(exc).__name__}: {exc})") from exc
