"""``probe``: what a media file holds, with exact rates and frame counts.

Built on ``ffprobe``.  The frame count comes from counting the video stream's
packets (cheap, no decode) and is checked against the container's own count when
it has one.  Variable frame rate is detected from the packet timestamps.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from dubcore.timebase import format_rate, parse_rate

from .errors import MediaError

log = logging.getLogger(__name__)

#: ffprobe reads at most this many packets' timestamps to decide on VFR.
VFR_SCAN_PACKETS = 2000


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MediaError(f"'{name}' was not found on PATH; install ffmpeg (e.g. `apt-get install ffmpeg`)")
    return path


@dataclass(frozen=True)
class VideoStream:
    index: int
    codec: str
    width: int
    height: int
    pix_fmt: str
    fps: Fraction
    frame_count: int
    rotation: int
    vfr: bool
    color_range: str | None = None
    color_space: str | None = None
    color_transfer: str | None = None
    color_primaries: str | None = None
    field_order: str | None = None
    sample_aspect_ratio: str | None = None
    start_time: Fraction = Fraction(0)

    @property
    def display_size(self) -> tuple[int, int]:
        """Width and height as shown, after rotation metadata."""
        return (self.height, self.width) if self.rotation % 180 else (self.width, self.height)


@dataclass(frozen=True)
class AudioStream:
    index: int
    codec: str
    sample_rate: int
    channels: int
    channel_layout: str | None
    duration: Fraction | None
    language: str | None = None


@dataclass(frozen=True)
class MediaInfo:
    path: str
    format_name: str
    duration: Fraction | None
    size_bytes: int
    video: VideoStream | None
    audio: tuple[AudioStream, ...] = field(default_factory=tuple)

    def require_video(self) -> VideoStream:
        if self.video is None:
            raise MediaError(f"{self.path}: has no video stream (format {self.format_name}); give a film with a picture")
        return self.video

    def to_dict(self) -> dict[str, Any]:
        def conv(obj: Any) -> Any:
            if isinstance(obj, Fraction):
                return format_rate(obj) if obj > 0 else str(obj)
            if isinstance(obj, dict):
                return {k: conv(v) for k, v in obj.items()}
            if isinstance(obj, (list, tuple)):
                return [conv(v) for v in obj]
            return obj

        data = conv(asdict(self))
        if self.duration is not None:
            data["duration_seconds"] = float(self.duration)
        if self.video is not None:
            data["video"]["duration_seconds"] = float(self.video.frame_count / self.video.fps)
        return data


def _frac(value: Any) -> Fraction | None:
    if value in (None, "", "N/A", "0/0"):
        return None
    try:
        return Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return None


def _run_ffprobe(args: list[str], path: Path) -> dict[str, Any]:
    cmd = [require_tool("ffprobe"), "-v", "error", "-of", "json", *args, str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "unknown error"
        raise MediaError(f"{path}: not a readable media file ({detail})")
    try:
        return json.loads(proc.stdout or "{}")
    except json.JSONDecodeError as exc:  # pragma: no cover - ffprobe always writes JSON
        raise MediaError(f"{path}: ffprobe returned unreadable output") from exc


def _rotation(stream: dict[str, Any]) -> int:
    """Display rotation in degrees (0, 90, 180, 270) as ffprobe reports it.

    Frames are always processed as stored (decoders run with ``-noautorotate``);
    the writer tags the output with the same rotation, so players show both alike.
    """
    for sd in stream.get("side_data_list") or []:
        if "rotation" in sd:
            return int(round(float(sd["rotation"]))) % 360
    tags = stream.get("tags") or {}
    try:
        return int(tags.get("rotate", 0)) % 360
    except ValueError:
        return 0


def _count_video_packets(path: Path, index: int) -> tuple[int, list[Fraction]]:
    """Number of video packets and the first timestamps (presentation order)."""
    data = _run_ffprobe(
        ["-select_streams", str(index), "-count_packets", "-show_entries", "stream=nb_read_packets"], path
    )
    streams = data.get("streams") or []
    count = int(streams[0].get("nb_read_packets", 0)) if streams else 0
    pkt = _run_ffprobe(
        [
            "-select_streams",
            str(index),
            "-read_intervals",
            f"%+#{VFR_SCAN_PACKETS}",
            "-show_entries",
            "packet=pts,duration",
            "-show_entries",
            "stream=time_base",
        ],
        path,
    )
    tb = _frac((pkt.get("streams") or [{}])[0].get("time_base")) or Fraction(1)
    pts = sorted(Fraction(int(p["pts"])) * tb for p in pkt.get("packets", []) if p.get("pts") not in (None, "N/A"))
    return count, pts


def _is_vfr(pts: list[Fraction], fps: Fraction) -> bool:
    """True when frame intervals differ from 1/fps by more than a third of a frame."""
    if len(pts) < 3:
        return False
    nominal = 1 / fps
    tolerance = nominal / 3
    return any(abs((b - a) - nominal) > tolerance for a, b in zip(pts, pts[1:]) if b != a)


def probe(path: str | Path) -> MediaInfo:
    """Describe ``path``; raise :class:`MediaError` naming the file if it is missing or not media."""
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{p}: no such file")
    if p.is_dir():
        raise MediaError(f"{p}: is a directory, expected a media file")
    if p.stat().st_size == 0:
        raise MediaError(f"{p}: file is empty, not media")
    data = _run_ffprobe(["-show_format", "-show_streams"], p)
    fmt = data.get("format") or {}
    streams = data.get("streams") or []
    if not streams:
        raise MediaError(f"{p}: not a media file (no audio or video streams found)")

    video: VideoStream | None = None
    audio: list[AudioStream] = []
    for s in streams:
        kind = s.get("codec_type")
        disposition = s.get("disposition") or {}
        if kind == "video" and video is None and not disposition.get("attached_pic"):
            video = _video_stream(p, s, fmt)
        elif kind == "audio":
            tags = s.get("tags") or {}
            audio.append(
                AudioStream(
                    index=int(s["index"]),
                    codec=str(s.get("codec_name", "?")),
                    sample_rate=int(s.get("sample_rate") or 0),
                    channels=int(s.get("channels") or 0),
                    channel_layout=s.get("channel_layout"),
                    duration=_frac(s.get("duration")),
                    language=tags.get("language"),
                )
            )
    if video is None and not audio:
        raise MediaError(f"{p}: not a media file (no audio or video streams found)")
    return MediaInfo(
        path=str(p),
        format_name=str(fmt.get("format_name", "?")),
        duration=_frac(fmt.get("duration")),
        size_bytes=int(fmt.get("size") or p.stat().st_size),
        video=video,
        audio=tuple(audio),
    )


def _video_stream(path: Path, s: dict[str, Any], fmt: dict[str, Any]) -> VideoStream:
    index = int(s["index"])
    r_rate = _frac(s.get("r_frame_rate"))
    avg_rate = _frac(s.get("avg_frame_rate"))
    rate = r_rate or avg_rate
    if rate is None or rate <= 0:
        raise MediaError(f"{path}: video stream {index} has no usable frame rate")
    fps = parse_rate(rate)
    if fps.denominator not in (1, 1001) and fps.denominator <= 1001:
        log.info("%s: unusual frame rate %s", path, format_rate(fps))
    count, pts = _count_video_packets(path, index)
    declared = s.get("nb_frames")
    if declared not in (None, "", "N/A") and int(declared) != count:
        log.warning("%s: container says %s frames, %d video packets read; using packets", path, declared, count)
    if count <= 0:
        raise MediaError(f"{path}: video stream {index} holds no frames")
    vfr = _is_vfr(pts, fps)
    if not vfr and avg_rate is not None and r_rate is not None and avg_rate > 0:
        # A container whose mean rate is far from its base rate has gaps or dups.
        vfr = abs(avg_rate - r_rate) / r_rate > Fraction(1, 100)
    start = _frac(s.get("start_time")) or Fraction(0)
    return VideoStream(
        index=index,
        codec=str(s.get("codec_name", "?")),
        width=int(s.get("width") or 0),
        height=int(s.get("height") or 0),
        pix_fmt=str(s.get("pix_fmt") or "?"),
        fps=fps,
        frame_count=count,
        rotation=_rotation(s),
        vfr=vfr,
        color_range=s.get("color_range"),
        color_space=s.get("color_space"),
        color_transfer=s.get("color_transfer"),
        color_primaries=s.get("color_primaries"),
        field_order=s.get("field_order"),
        sample_aspect_ratio=s.get("sample_aspect_ratio"),
        start_time=start,
    )


def frames_from_duration(duration: Fraction, fps: Fraction) -> int:
    return math.floor(duration * fps + Fraction(1, 2))
