"""Small immutable records of the film's domain.

Records reference each other by id (a face track names its shot by ``shot_id``),
hold integer frames and samples with exact rational rates, and serialise to plain
dicts; the files that carry them are versioned by :mod:`dubcore.schema`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Iterable, Literal, Sequence

from .timebase import FrameRange, Timecode, format_rate, frame_to_seconds, parse_rate


def shot_id(index: int) -> str:
    """Stable id of the ``index``-th shot (0-based): ``shot-0001`` is the first."""
    return f"shot-{index + 1:04d}"


@dataclass(frozen=True)
class Shot:
    """One shot: a half-open frame range of the film at its exact frame rate."""

    id: str
    index: int
    frames: FrameRange
    fps: Fraction

    @property
    def start_timecode(self) -> str:
        return str(Timecode.from_frame(self.frames.start, self.fps))

    @property
    def end_timecode(self) -> str:
        """Timecode of the first frame after the shot (the EDL convention)."""
        return str(Timecode.from_frame(self.frames.end, self.fps))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "index": self.index,
            "frames": self.frames.to_list(),
            "frame_count": self.frames.duration,
            "start_timecode": self.start_timecode,
            "end_timecode": self.end_timecode,
            # Informational only: the frames above are the truth.
            "start_seconds": float(frame_to_seconds(self.frames.start, self.fps)),
            "end_seconds": float(frame_to_seconds(self.frames.end, self.fps)),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], fps: Fraction) -> "Shot":
        return cls(id=str(data["id"]), index=int(data["index"]), frames=FrameRange.from_list(data["frames"]), fps=fps)


@dataclass(frozen=True)
class ShotList:
    """The shots of one film, contiguous and covering every frame exactly once."""

    source: str
    fps: Fraction
    frame_count: int
    shots: tuple[Shot, ...]
    detector: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        expected = 0
        for i, shot in enumerate(self.shots):
            if shot.index != i or shot.frames.start != expected or shot.frames.duration <= 0:
                raise ValueError(
                    f"shot list of {self.source} is not contiguous at {shot.id}: "
                    f"frames {shot.frames.to_list()}, expected start {expected}"
                )
            expected = shot.frames.end
        if expected != self.frame_count:
            raise ValueError(f"shot list of {self.source} covers {expected} frames, film has {self.frame_count}")

    @classmethod
    def from_cuts(
        cls, source: str, fps: Fraction, frame_count: int, cuts: Iterable[int], detector: dict[str, Any] | None = None
    ) -> "ShotList":
        """Build the list from the first frames of every new shot (frame 0 implied)."""
        bounds = [0] + sorted({int(c) for c in cuts if 0 < int(c) < frame_count}) + [frame_count]
        shots = tuple(
            Shot(id=shot_id(i), index=i, frames=FrameRange(a, b), fps=fps) for i, (a, b) in enumerate(zip(bounds, bounds[1:]))
        )
        return cls(source=source, fps=fps, frame_count=frame_count, shots=shots, detector=dict(detector or {}))

    @property
    def cuts(self) -> list[int]:
        return [s.frames.start for s in self.shots[1:]]

    def __len__(self) -> int:
        return len(self.shots)

    def __iter__(self):
        return iter(self.shots)

    def by_id(self, sid: str) -> Shot:
        for shot in self.shots:
            if shot.id == sid:
                return shot
        raise KeyError(f"no shot {sid!r} in shot list of {self.source}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "fps": format_rate(self.fps),
            "frame_count": self.frame_count,
            "detector": self.detector,
            "shots": [s.to_dict() for s in self.shots],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ShotList":
        fps = parse_rate(data["fps"])
        shots = tuple(Shot.from_dict(s, fps) for s in data["shots"])
        return cls(
            source=str(data["source"]),
            fps=fps,
            frame_count=int(data["frame_count"]),
            shots=shots,
            detector=dict(data.get("detector") or {}),
        )


BoxSource = Literal["detected", "interpolated", "smoothed"]


@dataclass(frozen=True)
class FaceObservation:
    """The face of one track in one frame: box ``(x1, y1, x2, y2)`` in source pixels,
    five landmarks ``((x, y), ...)`` (eyes, nose, mouth corners), detector score, and
    where the box came from."""

    frame: int
    box: tuple[float, float, float, float]
    landmarks: tuple[tuple[float, float], ...] | None
    score: float
    source: BoxSource = "detected"

    def to_dict(self) -> dict[str, Any]:
        return {
            "frame": self.frame,
            "box": [round(v, 3) for v in self.box],
            "landmarks": None if self.landmarks is None else [[round(x, 3), round(y, 3)] for x, y in self.landmarks],
            "score": round(self.score, 5),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FaceObservation":
        lms = data.get("landmarks")
        return cls(
            frame=int(data["frame"]),
            box=tuple(float(v) for v in data["box"]),  # type: ignore[arg-type]
            landmarks=None if lms is None else tuple((float(x), float(y)) for x, y in lms),
            score=float(data["score"]),
            source=data.get("source", "detected"),
        )


@dataclass(frozen=True)
class FaceTrack:
    """One face followed through one shot; one observation per frame of ``frames``."""

    id: str
    shot_id: str
    frames: FrameRange
    observations: tuple[FaceObservation, ...]

    def __post_init__(self) -> None:
        if len(self.observations) != self.frames.duration:
            raise ValueError(f"track {self.id}: {len(self.observations)} observations for {self.frames.duration} frames")
        for expected, obs in zip(self.frames, self.observations):
            if obs.frame != expected:
                raise ValueError(f"track {self.id}: observation for frame {obs.frame}, expected {expected}")

    def at(self, frame: int) -> FaceObservation | None:
        if frame not in self.frames:
            return None
        return self.observations[frame - self.frames.start]

    def shifted(self, offset: int) -> "FaceTrack":
        """The same track on a timeline moved by ``offset`` frames (e.g. inside a shot's own segment)."""
        obs = tuple(replace(o, frame=o.frame + offset) for o in self.observations)
        return replace(self, frames=FrameRange(self.frames.start + offset, self.frames.end + offset), observations=obs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "shot_id": self.shot_id,
            "frames": self.frames.to_list(),
            "observations": [o.to_dict() for o in self.observations],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FaceTrack":
        return cls(
            id=str(data["id"]),
            shot_id=str(data["shot_id"]),
            frames=FrameRange.from_list(data["frames"]),
            observations=tuple(FaceObservation.from_dict(o) for o in data["observations"]),
        )


@dataclass(frozen=True)
class SpeakerTurn:
    """A stretch of speech by one speaker, as half-open sample indices at ``sample_rate``."""

    id: str
    speaker: str
    start_sample: int
    end_sample: int
    sample_rate: int

    def __post_init__(self) -> None:
        if not (0 <= self.start_sample <= self.end_sample):
            raise ValueError(f"turn {self.id}: invalid samples [{self.start_sample}, {self.end_sample})")

    @property
    def start_seconds(self) -> Fraction:
        return Fraction(self.start_sample, self.sample_rate)

    @property
    def end_seconds(self) -> Fraction:
        return Fraction(self.end_sample, self.sample_rate)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "speaker": self.speaker,
            "samples": [self.start_sample, self.end_sample],
            "sample_rate": self.sample_rate,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SpeakerTurn":
        s0, s1 = data["samples"]
        return cls(str(data["id"]), str(data["speaker"]), int(s0), int(s1), int(data["sample_rate"]))


def ids(records: Sequence[Any]) -> list[str]:
    return [r.id for r in records]
