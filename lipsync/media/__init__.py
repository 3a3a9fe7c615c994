"""Media I/O on ffmpeg: probe, streamed frames, audio, muxing."""

from .errors import MediaError
from .frames import LOSSLESS, EncodeSettings, FrameReader, FrameWriter, read_frames
from .probe import AudioStream, MediaInfo, VideoStream, probe

__all__ = [
    "LOSSLESS",
    "AudioStream",
    "EncodeSettings",
    "FrameReader",
    "FrameWriter",
    "MediaError",
    "MediaInfo",
    "VideoStream",
    "probe",
    "read_frames",
]
