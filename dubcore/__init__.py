"""dub-film's shared domain model: exact time, records, versioned files, storage.

A package of its own because every layer needs it -- the ``lipsync`` library, the
Prefect ``tasks`` and ``flows``, the CLI -- and it must stay free of heavy
dependencies (no torch, no Prefect, no ffmpeg) so that any of them can import it.
"""

from .records import FaceObservation, FaceTrack, Shot, ShotList, SpeakerTurn, shot_id
from .timebase import (
    FrameRange,
    Timecode,
    format_rate,
    frame_to_sample,
    frame_to_seconds,
    parse_rate,
    sample_to_frame,
    samples_for_frames,
    seconds_to_frame,
    timecode,
)

__all__ = [
    "FaceObservation",
    "FaceTrack",
    "FrameRange",
    "Shot",
    "ShotList",
    "SpeakerTurn",
    "Timecode",
    "format_rate",
    "frame_to_sample",
    "frame_to_seconds",
    "parse_rate",
    "sample_to_frame",
    "samples_for_frames",
    "seconds_to_frame",
    "shot_id",
    "timecode",
]
