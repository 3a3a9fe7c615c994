"""faces.json: the face tracks of a film, per shot, per track, per frame.

Layout (``dub-film/faces@1``, written atomically by :func:`dubcore.schema.write_json`)::

    {
      "schema": "dub-film/faces@1",
      "source": "film.mov",
      "fps": "24000/1001",
      "frame_count": 1234,
      "params": {"tracker": {...}, "smoothing": {...}, ...},
      "shots": [
        {"id": "shot-0001", "frames": [0, 120],
         "tracks": [
           {"id": "shot-0001/face-01", "shot_id": "shot-0001", "frames": [10, 50],
            "quality": {"castable": true, "reason": "castable: ...", "evidence": {"median_score": 0.99, ...}},
            "observations": [
              {"frame": 10, "box": [x1, y1, x2, y2], "landmarks": [[x, y] * 5],
               "score": 0.98, "source": "detected"}, ...]}]},
        ...],
      "dropped": [{"id": ..., "shot_id": ..., "frames": [a, b], "reason": "..."}, ...]
    }

Every shot of the film that was tracked is listed, including shots with no
track.  ``quality`` is the verdict of :mod:`lipsync.faces.quality` on the track
(castable or not, why, and the evidence); a track without it -- every track of a
file written before the check existed -- is castable.  Coordinates are rounded to 1/1000 px and scores to 1e-5 by
:meth:`FaceObservation.to_dict`, so a round trip returns
``FaceTrack.from_dict(track.to_dict())`` for each track written.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

from dubcore.records import FaceTrack, Shot
from dubcore.schema import SchemaError, read_json, schema_tag, write_json
from dubcore.timebase import FrameRange, RateLike, format_rate, parse_rate

from .quality import TrackQuality

__all__ = ["FacesFile", "FacesShot", "read_faces", "write_faces"]

KIND = "faces"
_SOURCES = ("detected", "interpolated", "smoothed")

ShotLike = Union[Shot, "FacesShot", tuple[str, FrameRange], Mapping[str, Any]]


@dataclass(frozen=True)
class FacesShot:
    """One shot of faces.json: its id, frame range and the tracks inside it."""

    id: str
    frames: FrameRange
    tracks: tuple[FaceTrack, ...] = ()


@dataclass(frozen=True)
class FacesFile:
    """The content of one faces.json, validated."""

    schema: str
    source: str
    fps: Fraction
    frame_count: int
    shots: tuple[FacesShot, ...]
    dropped: tuple[dict[str, Any], ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, TrackQuality] = field(default_factory=dict)  # track id -> verdict; missing = castable

    def castable(self, track_id: str) -> bool:
        """Whether casting may drive ``track_id`` unasked (no verdict stored means castable)."""
        q = self.quality.get(track_id)
        return True if q is None else bool(q.castable)

    @property
    def tracks(self) -> tuple[FaceTrack, ...]:
        """Every track of the film, in shot order."""
        return tuple(t for s in self.shots for t in s.tracks)

    def shot(self, shot_id: str) -> FacesShot:
        for s in self.shots:
            if s.id == shot_id:
                return s
        raise KeyError(f"no shot {shot_id!r} in faces of {self.source}")

    def track(self, track_id: str) -> FaceTrack:
        for t in self.tracks:
            if t.id == track_id:
                return t
        raise KeyError(f"no track {track_id!r} in faces of {self.source}")


def _shot_entry(s: ShotLike) -> tuple[str, FrameRange]:
    if isinstance(s, (Shot, FacesShot)):
        return s.id, s.frames
    if isinstance(s, Mapping):
        return str(s["id"]), FrameRange.from_list(s["frames"])
    sid, frames = s
    return str(sid), frames if isinstance(frames, FrameRange) else FrameRange.from_list(frames)


def _check_layout(where: str, frame_count: int, shots: Sequence[FacesShot]) -> None:
    """Shots ordered and disjoint inside the film; tracks inside their shot; ids unique."""
    seen: set[str] = set()
    prev_end = 0
    for s in shots:
        if s.id in seen:
            raise ValueError(f"{where}: shot {s.id} listed twice")
        seen.add(s.id)
        if s.frames.start < prev_end or s.frames.end > frame_count:
            raise ValueError(
                f"{where}: shot {s.id} frames {s.frames.to_list()} overlap the previous shot "
                f"or pass the film's {frame_count} frames"
            )
        prev_end = s.frames.end
        for t in s.tracks:
            if t.id in seen:
                raise ValueError(f"{where}: id {t.id} used twice")
            seen.add(t.id)
            if t.shot_id != s.id:
                raise ValueError(f"{where}: track {t.id} names shot {t.shot_id} but is listed under {s.id}")
            if t.frames.duration == 0 or t.frames.intersection(s.frames) != t.frames:
                raise ValueError(f"{where}: track {t.id} frames {t.frames.to_list()} are not inside shot {s.id} {s.frames.to_list()}")
            for o in t.observations:
                if o.source not in _SOURCES:
                    raise ValueError(f"{where}: track {t.id} frame {o.frame}: unknown source {o.source!r}")
                if len(o.box) != 4 or not all(math.isfinite(v) for v in o.box) or o.box[2] < o.box[0] or o.box[3] < o.box[1]:
                    raise ValueError(f"{where}: track {t.id} frame {o.frame}: invalid box {list(o.box)}")
                if o.landmarks is not None and not all(math.isfinite(v) for p in o.landmarks for v in p):
                    raise ValueError(f"{where}: track {t.id} frame {o.frame}: non-finite landmarks")


def write_faces(
    path: str | os.PathLike[str],
    *,
    source: str,
    fps: RateLike,
    frame_count: int,
    shots: Iterable[ShotLike],
    tracks: Iterable[FaceTrack],
    dropped: Iterable[Mapping[str, Any]] = (),
    params: Mapping[str, Any] | None = None,
    quality: Mapping[str, TrackQuality] | None = None,
) -> Path:
    """Write faces.json atomically; returns the path.

    ``shots`` are the shots that were tracked: :class:`~dubcore.records.Shot`
    records, ``(shot_id, FrameRange)`` pairs or ``{"id", "frames"}`` dicts, in film
    order.  Each track goes under the shot its ``shot_id`` names and must lie
    inside it; tracks of a shot are written in the order given.  ``dropped`` are
    JSON-ready dicts (e.g. :meth:`TrackingResult.dropped_dicts`); ``params`` the
    parameters used (tracker, smoothing, detector), JSON-ready.  ``quality``
    maps track ids to their :class:`TrackQuality` (e.g. the merged
    :attr:`TrackingResult.quality` of every shot); a track without one is written
    without a verdict (castable).  Raises ``ValueError`` (and writes nothing) if
    the layout is inconsistent or a verdict names a track not written.
    """
    entries = [_shot_entry(s) for s in shots]
    by_shot: dict[str, list[FaceTrack]] = {sid: [] for sid, _ in entries}
    for t in tracks:
        if t.shot_id not in by_shot:
            raise ValueError(f"{path}: track {t.id} names shot {t.shot_id}, which is not among the shots given")
        by_shot[t.shot_id].append(t)
    faces_shots = [FacesShot(sid, frames, tuple(by_shot[sid])) for sid, frames in entries]
    _check_layout(str(path), int(frame_count), faces_shots)
    quality = dict(quality or {})
    written = {t.id for s in faces_shots for t in s.tracks}
    stray = sorted(set(quality) - written)
    if stray:
        raise ValueError(
            f"{path}: quality given for {', '.join(stray)}, which are not among the tracks written; "
            "pass the quality of the tracks given (TrackingResult.quality of the same results)"
        )
    for tid, q in quality.items():
        if q.track_id != tid:
            raise ValueError(f"{path}: quality under {tid!r} is the verdict on {q.track_id!r}; key it by its own track id")
    payload = {
        "source": str(source),
        "fps": format_rate(parse_rate(fps)),
        "frame_count": int(frame_count),
        "params": dict(params or {}),
        "shots": [
            {"id": s.id, "frames": s.frames.to_list(), "tracks": [_track_entry(t, quality.get(t.id)) for t in s.tracks]}
            for s in faces_shots
        ],
        "dropped": [dict(d) for d in dropped],
    }
    return write_json(path, KIND, payload)


def _track_entry(track: FaceTrack, quality: TrackQuality | None) -> dict[str, Any]:
    entry = track.to_dict()
    if quality is None:
        return entry
    q = quality.to_dict()
    del q["track_id"]  # the track's own id
    observations = entry.pop("observations")
    return {**entry, "quality": q, "observations": observations}


def read_faces(path: str | os.PathLike[str]) -> FacesFile:
    """Read and validate faces.json, rebuilding :class:`FaceTrack` records.

    Raises :class:`~dubcore.schema.SchemaError` naming the file (and the shot or
    track) when it is not a faces file this version understands or is inconsistent.
    """
    data = read_json(path, KIND)
    where = str(path)
    try:
        fps = parse_rate(data["fps"])
        frame_count = int(data["frame_count"])
        shots = []
        quality: dict[str, TrackQuality] = {}
        for s in data["shots"]:
            sid = str(s["id"])
            try:
                tracks = tuple(FaceTrack.from_dict(t) for t in s.get("tracks", []))
            except (KeyError, TypeError, ValueError) as exc:
                raise SchemaError(f"{where}: shot {sid}: invalid track ({exc})") from exc
            for t, entry in zip(tracks, s.get("tracks", [])):
                if entry.get("quality") is None:
                    continue
                try:
                    quality[t.id] = TrackQuality.from_dict({**entry["quality"], "track_id": t.id})
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    raise SchemaError(
                        f"{where}: track {t.id}: invalid quality ({type(exc).__name__}: {exc}); expected "
                        '{"castable": true|false, "reason": "...", "evidence": {name: number}}'
                    ) from exc
            shots.append(FacesShot(sid, FrameRange.from_list(s["frames"]), tracks))
        _check_layout(where, frame_count, shots)
        dropped = tuple(dict(d) for d in data.get("dropped", []))
        params = dict(data.get("params") or {})
        source = str(data["source"])
    except SchemaError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"{where}: invalid faces file ({type(exc).__name__}: {exc})") from exc
    return FacesFile(
        schema=str(data.get("schema", schema_tag(KIND))),
        source=source,
        fps=fps,
        frame_count=frame_count,
        shots=tuple(shots),
        dropped=dropped,
        params=params,
        quality=quality,
    )
