"""Split a film into shots: decode once, downscaled, and run every chosen detector."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from dubcore.records import ShotList

from ..media.frames import FrameReader
from ..media.probe import MediaInfo, probe
from . import DETECTORS

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

#: Default detectors: hard cuts by content change, and cuts through black.
DEFAULT_DETECTORS: tuple[str, ...] = ("content", "fade")


def analysis_size(width: int, height: int, analysis_width: int) -> tuple[int, int]:
    """Downscaled size for detection: ``analysis_width`` wide (never upscaled), even height."""
    if width <= analysis_width:
        return width, height
    h = max(2, round(height * analysis_width / width / 2) * 2)
    return analysis_width, h


def merge_cuts(cuts: Sequence[int], frame_count: int, min_shot_frames: int) -> list[int]:
    """Sorted union of cuts, dropping any that would make a shot shorter than ``min_shot_frames``."""
    kept: list[int] = []
    last = 0
    for cut in sorted(set(cuts)):
        if cut - last >= min_shot_frames and frame_count - cut >= min_shot_frames:
            kept.append(cut)
            last = cut
    return kept


def detect_shots(
    path: str | Path,
    *,
    detectors: Sequence[str] = DEFAULT_DETECTORS,
    min_shot_frames: int = 15,
    analysis_width: int = 256,
    detector_options: dict[str, dict[str, Any]] | None = None,
    info: MediaInfo | None = None,
    progress: Progress | None = None,
) -> ShotList:
    """Shots of the film at ``path`` as a contiguous :class:`ShotList`.

    The film is decoded once, scaled to ``analysis_width`` with an area filter,
    and every detector sees every frame.  Their cuts are merged; a cut closer than
    ``min_shot_frames`` to the previous one (or to either end) is dropped.
    """
    info = info or probe(path)
    video = info.require_video()
    unknown = [d for d in detectors if d not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown shot detector(s) {unknown}; available: {sorted(DETECTORS)}")
    options = detector_options or {}
    active = [DETECTORS[name](video.fps, min_shot_frames, **options.get(name, {})) for name in detectors]
    size = analysis_size(video.width, video.height, analysis_width)
    cuts: list[int] = []
    last = -1
    with FrameReader(path, pix_fmt="bgr24", size=size, info=info) as reader:
        for index, frame in enumerate(reader):
            for det in active:
                cuts.extend(det.process_frame(index, frame))
            last = index
            if progress is not None and (index % 64 == 0 or index + 1 == video.frame_count):
                progress(index + 1, video.frame_count)
    for det in active:
        cuts.extend(det.post_process(last))
    kept = merge_cuts(cuts, video.frame_count, min_shot_frames)
    log.info("%s: %d shots (%d raw cuts from %s)", path, len(kept) + 1, len(cuts), ", ".join(detectors))
    return ShotList.from_cuts(
        str(path),
        video.fps,
        video.frame_count,
        kept,
        detector={
            "detectors": {d.name: d.params() for d in active},
            "analysis_size": list(size),
            "min_shot_frames": min_shot_frames,
        },
    )
