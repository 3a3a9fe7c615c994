"""Faces of a film, shot by shot: decode once per shot, detect in batches, track, smooth.

Frames are streamed from the shot (never the whole shot in memory: at most one
detector batch), detections feed a :class:`ShotTracker` frame by frame, and each
finished track is smoothed.  Tracks never cross a cut because each shot gets its
own tracker.  A frame without a face is simply a frame with no detections.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from dubcore.records import FaceTrack, Shot, ShotList
from dubcore.timebase import FrameRange

from ..media.frames import FrameReader, FrameWriter, EncodeSettings
from ..media.probe import MediaInfo, probe
from .detect import FaceDetector
from .quality import QualityParams, assess_tracks
from .smooth import SmoothParams, smooth_track
from .track import ShotTracker, TrackerParams, TrackingResult

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class FaceTrackingParams:
    """How faces are followed: tracker thresholds, smoothing, whether to smooth, and the castable-face rules."""

    tracker: TrackerParams = field(default_factory=TrackerParams)
    smoothing: SmoothParams = field(default_factory=SmoothParams)
    smooth: bool = True
    quality: QualityParams = field(default_factory=QualityParams)

    def to_dict(self) -> dict[str, Any]:
        return {"tracker": self.tracker.to_dict(), "smoothing": self.smoothing.to_dict(), "smooth": self.smooth,
                "quality": self.quality.to_dict()}


def _batches(frames: Iterable[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def track_shot_faces(
    video: str | Path,
    shot: Shot,
    detector: FaceDetector,
    params: FaceTrackingParams = FaceTrackingParams(),
    *,
    batch_size: int = 16,
    info: MediaInfo | None = None,
    progress: Progress | None = None,
) -> TrackingResult:
    """Face tracks of one shot, smoothed unless ``params.smooth`` is false.

    Every kept track gets a quality verdict (:func:`~lipsync.faces.quality.assess_tracks`,
    on the raw tracks: smoothing would hide the jitter it measures) in
    ``result.quality``.
    """
    info = info or probe(video)
    tracker = ShotTracker(shot.id, shot.frames.start, params.tracker)
    done = 0
    with FrameReader(video, frames=shot.frames, pix_fmt="bgr24", info=info) as reader:
        for batch in _batches(reader, batch_size):
            for det in detector.detect(batch):
                tracker.update(det)
            done += len(batch)
            if progress is not None:
                progress(done, shot.frames.duration)
    result = tracker.finish()
    v = info.require_video()
    result = replace(result, quality=assess_tracks(result.tracks, (v.width, v.height), params.quality))
    if params.smooth and result.tracks:
        result = replace(result, tracks=tuple(smooth_track(t, params.smoothing) for t in result.tracks))
    return result


def track_film_faces(
    video: str | Path,
    shots: ShotList,
    detector: FaceDetector,
    params: FaceTrackingParams = FaceTrackingParams(),
    *,
    batch_size: int = 16,
    info: MediaInfo | None = None,
    progress: Progress | None = None,
) -> list[TrackingResult]:
    """Face tracks of every shot, in shot order."""
    info = info or probe(video)
    total = shots.frame_count
    results = []
    for shot in shots:
        base = shot.frames.start

        def shot_progress(done: int, _total: int, base: int = base) -> None:
            if progress is not None:
                progress(base + done, total)

        results.append(track_shot_faces(video, shot, detector, params, batch_size=batch_size, info=info, progress=shot_progress))
    return results


_COLOURS = [(0, 200, 255), (80, 255, 80), (255, 120, 40), (220, 80, 255), (40, 40, 255), (255, 255, 60)]
_SOURCE_STYLE = {"detected": 2, "smoothed": 2, "interpolated": 1}


def render_tracks(
    video: str | Path,
    tracks: Sequence[FaceTrack],
    out: str | Path,
    *,
    frames: FrameRange | None = None,
    info: MediaInfo | None = None,
) -> Path:
    """Debug render: the video with every track's box, landmarks and id drawn on it.

    Interpolated boxes are drawn thin, detected/smoothed ones thick.
    """
    import cv2

    info = info or probe(video)
    v = info.require_video()
    frames = frames or FrameRange(0, v.frame_count)
    by_frame: dict[int, list[tuple[int, FaceTrack]]] = {}
    for k, track in enumerate(tracks):
        for f in track.frames:
            if f in frames:
                by_frame.setdefault(f, []).append((k, track))
    with FrameWriter(out, width=v.width, height=v.height, fps=v.fps, pix_fmt="bgr24",
                     settings=EncodeSettings(crf=18, preset="veryfast", pix_fmt="yuv420p"),
                     expected_frames=frames.duration) as writer:
        for index, frame in zip(frames, FrameReader(video, frames=frames, pix_fmt="bgr24", info=info)):
            img = np.ascontiguousarray(frame)
            for k, track in by_frame.get(index, []):
                obs = track.at(index)
                assert obs is not None
                colour = _COLOURS[k % len(_COLOURS)]
                x1, y1, x2, y2 = (int(round(c)) for c in obs.box)
                cv2.rectangle(img, (x1, y1), (x2, y2), colour, _SOURCE_STYLE.get(obs.source, 1))
                for x, y in obs.landmarks or ():
                    cv2.circle(img, (int(round(x)), int(round(y))), 2, colour, -1)
                cv2.putText(img, f"{track.id.split('/')[-1]} {obs.source[0]}", (x1, max(12, y1 - 4)),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
            writer.write(img)
    return Path(out)
