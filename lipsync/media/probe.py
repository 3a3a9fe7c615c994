"""``probe``: what a media file holds, with exact rates and frame counts.

Built on ``ffprobe``: one call for the container and streams, one pass over
every packet's timestamps (demux only, no decode; read as a stream, so memory
does not grow with the film's length).  The frame count is the video packets
read, checked against the container's own count when it has one; the true
duration of the picture is its last packet's end minus its first packet's start
(right on variable-frame-rate footage); variable frame rate is detected from all
packet timestamps.

A damaged master is refused (:class:`DamagedMediaError`), never silently
shortened: an MP4/MOV whose index (``moov``) is missing, a container that
declares more frames or a longer duration than its packets hold, or read
errors at the end of the file.  :func:`check_tail` (run by preflight) also
decodes the last GOP.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import re
import shutil
import subprocess
import threading
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from dubcore.timebase import format_rate, parse_rate

from .errors import MediaError

log = logging.getLogger(__name__)

#: Packets may come out of presentation order (B-frames) by at most this many.
REORDER_WINDOW = 64

#: Containers with an index: a seek lands exactly on a key frame, so any decoder error after it is damage.
INDEXED_FORMATS = ("mov", "matroska", "avi", "mxf")

#: Demuxer messages that mean the file ends before its data does.
TRUNCATION_SIGNS = ("partial file", "ended prematurely", "moov atom not found", "truncat", "end of file",
                    "invalid nal unit size", "error reading", "incomplete", "exceeds containing", "corrupt")


class DamagedMediaError(MediaError):
    """A media file that is truncated or damaged; the message says how many frames are readable."""

    def __init__(self, message: str, readable_frames: int | None = None) -> None:
        super().__init__(message)
        self.readable_frames = readable_frames


DAMAGED_ADVICE = ("The master is damaged or incomplete: transfer it again (compare its size and checksum with the sender's) "
                  "or ask for a new export; dub-film will not deliver a film shorter than its master")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MediaError(f"'{name}' was not found on PATH; install ffmpeg (e.g. `apt-get install ffmpeg`)")
    return path


def media_arg(path: str | Path) -> str:
    """``path`` as an ffmpeg/ffprobe input or output argument, whatever its name.

    A local file is given as ``file:<path>``, so a name with a colon
    (``Ep 1: Pilot.mov``) is not read as a protocol and one starting with ``-``
    is not read as an option; ffmpeg still picks the container from the
    extension.  Arguments go in an argv list (no shell), so spaces, quotes,
    parentheses and any script need no escaping."""
    text = str(path)
    return text if text.startswith(("file:", "pipe:")) else f"file:{text}"


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
    #: Seconds from the first frame's start to the last frame's end (packet timestamps);
    #: differs from frame_count / fps on variable-frame-rate footage.
    duration: Fraction | None = None
    #: Video packets from the last key frame to the end (the last GOP), and that key frame's time.
    tail_frames: int = 0
    tail_start: Fraction | None = None
    time_base: Fraction = Fraction(1)
    #: The encoder profile ffprobe reports (``High``, ``Main 10``, ProRes ``HQ`` ...).
    profile: str | None = None

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
            v = self.video
            for internal in ("tail_frames", "tail_start", "time_base"):  # where preflight's tail check starts: not for reports
                data["video"].pop(internal, None)
            data["video"]["duration_seconds"] = float(v.duration if v.duration is not None else v.frame_count / v.fps)
        return data


def _frac(value: Any) -> Fraction | None:
    if value in (None, "", "N/A", "0/0"):
        return None
    try:
        return Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return None


def _run_ffprobe(args: list[str], path: Path) -> dict[str, Any]:
    cmd = [require_tool("ffprobe"), "-v", "error", "-of", "json", *args, media_arg(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "unknown error"
        if "moov atom not found" in proc.stderr and _has_mp4_boxes(path):
            raise DamagedMediaError(
                f"{path}: truncated: the MP4/MOV index (moov atom) is missing, so 0 frames are readable; "
                f"the file was cut off before its end ({_size(path)}). {DAMAGED_ADVICE}", readable_frames=0)
        raise MediaError(f"{path}: not a readable media file ({detail})")
    try:
        return json.loads(proc.stdout or "{}")
    except json.JSONDecodeError as exc:  # pragma: no cover - ffprobe always writes JSON
        raise MediaError(f"{path}: ffprobe returned unreadable output") from exc


def _has_mp4_boxes(path: Path) -> bool:
    """Whether ``path`` starts like an MP4/MOV (an ``ftyp``, ``mdat``, ``free`` ... box): a file
    that does but has no ``moov`` was cut off; one that does not is simply not media."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    return len(head) == 8 and head[4:8] in (b"ftyp", b"mdat", b"moov", b"free", b"skip", b"wide", b"pnot")


def _size(path: Path) -> str:
    try:
        return f"{path.stat().st_size} bytes on disk"
    except OSError:
        return "size unknown"


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


@dataclass
class _PacketScan:
    """What one pass over the packets found (constant size, whatever the film's length)."""

    video_packets: int = 0
    first_pts: Fraction | None = None
    end: Fraction | None = None  # latest video packet end (pts + duration)
    file_end: Fraction | None = None  # latest packet end of any stream
    irregular: int = 0  # video frame intervals off the nominal one by more than a third of a frame
    tail_frames: int = 0
    tail_start: Fraction | None = None
    warnings: tuple[str, ...] = ()


#: The ``[matroska,webm @ 0x55...] `` prefix of ffmpeg's log lines.
_LOG_PREFIX = re.compile(r"^\[[^\]]* @ 0x[0-9a-fA-F]+\]\s*")


class _Drain:
    """Keep at most ``limit`` lines of a child's stderr, read on a thread."""

    def __init__(self, stream, limit: int = 50) -> None:  # type: ignore[no-untyped-def]
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._run, args=(stream, limit), daemon=True)
        self._thread.start()

    def _run(self, stream, limit: int) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            if len(self.lines) < limit:
                self.lines.append(_LOG_PREFIX.sub("", line.strip()))
        stream.close()

    def join(self) -> list[str]:
        self._thread.join(timeout=10)
        return self.lines


def _scan_packets(path: Path, video_index: int, time_bases: dict[int, Fraction], fps: Fraction) -> _PacketScan:
    """One demux pass over every packet (no decode), streamed: counts, extent, regularity, tail."""
    cmd = [require_tool("ffprobe"), "-v", "error", "-show_entries", "packet=stream_index,pts,dts,duration,flags",
           "-of", "compact=p=0", media_arg(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace")
    drain = _Drain(proc.stderr)
    scan = _PacketScan()
    nominal = 1 / fps
    tolerance = nominal / 3
    window: list[Fraction] = []  # pts not yet in presentation order
    last: Fraction | None = None

    def emit(t: Fraction) -> None:
        nonlocal last
        if last is not None and t != last and abs((t - last) - nominal) > tolerance:
            scan.irregular += 1
        last = t

    assert proc.stdout is not None
    for line in proc.stdout:
        fields = dict(kv.split("=", 1) for kv in line.strip().split("|") if "=" in kv)
        try:
            index = int(fields.get("stream_index", -1))
        except ValueError:
            continue
        tb = time_bases.get(index, Fraction(1))
        ts = fields.get("pts")
        if ts in (None, "", "N/A"):
            ts = fields.get("dts")
        if ts in (None, "", "N/A"):
            if index == video_index:
                scan.video_packets += 1
                scan.tail_frames += 1
            continue
        t = int(ts) * tb
        dur_raw = fields.get("duration")
        dur = int(dur_raw) * tb if dur_raw not in (None, "", "N/A") else Fraction(0)
        end = t + dur
        if scan.file_end is None or end > scan.file_end:
            scan.file_end = end
        if index != video_index:
            continue
        scan.video_packets += 1
        if "K" in fields.get("flags", ""):
            scan.tail_frames, scan.tail_start = 1, t
        elif scan.tail_start is None or t >= scan.tail_start:  # (leading B-frames of an open GOP show before it)
            scan.tail_frames += 1
        if scan.first_pts is None or t < scan.first_pts:
            scan.first_pts = t
        if scan.end is None or end > scan.end:
            scan.end = end if dur > 0 else t + nominal
        heapq.heappush(window, t)
        if len(window) > REORDER_WINDOW:
            emit(heapq.heappop(window))
    while window:
        emit(heapq.heappop(window))
    proc.wait()
    lines = drain.join()
    scan.warnings = tuple(lines)
    if proc.returncode != 0 and any("moov atom not found" in w for w in lines) and _has_mp4_boxes(path):
        raise DamagedMediaError(
            f"{path}: truncated: the MP4/MOV index (moov atom) is missing, so 0 frames are readable; "
            f"the file was cut off before its end ({_size(path)}). {DAMAGED_ADVICE}", readable_frames=0)
    return scan


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

    time_bases = {int(s["index"]): _frac(s.get("time_base")) or Fraction(1) for s in streams if "index" in s}
    video: VideoStream | None = None
    audio: list[AudioStream] = []
    for s in streams:
        kind = s.get("codec_type")
        disposition = s.get("disposition") or {}
        if kind == "video" and video is None and not disposition.get("attached_pic"):
            video = _video_stream(p, s, fmt, time_bases)
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


def _video_stream(path: Path, s: dict[str, Any], fmt: dict[str, Any], time_bases: dict[int, Fraction]) -> VideoStream:
    index = int(s["index"])
    r_rate = _frac(s.get("r_frame_rate"))
    avg_rate = _frac(s.get("avg_frame_rate"))
    rate = r_rate or avg_rate
    if rate is None or rate <= 0:
        raise MediaError(f"{path}: video stream {index} has no usable frame rate")
    fps = parse_rate(rate)
    if fps.denominator not in (1, 1001) and fps.denominator <= 1001:
        log.info("%s: unusual frame rate %s", path, format_rate(fps))
    scan = _scan_packets(path, index, time_bases, fps)
    count = scan.video_packets
    _refuse_if_truncated(path, s, fmt, scan, index, fps)
    declared = s.get("nb_frames")
    if declared not in (None, "", "N/A") and int(declared) != count:
        log.warning("%s: container says %s frames, %d video packets read; using packets", path, declared, count)
    if count <= 0:
        raise MediaError(f"{path}: video stream {index} holds no frames")
    vfr = scan.irregular > 0
    if not vfr and avg_rate is not None and r_rate is not None and avg_rate > 0:
        # A container whose mean rate is far from its base rate has gaps or dups.
        vfr = abs(avg_rate - r_rate) / r_rate > Fraction(1, 100)
    start = _frac(s.get("start_time")) or Fraction(0)
    duration = scan.end - scan.first_pts if scan.end is not None and scan.first_pts is not None else None
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
        duration=duration,
        tail_frames=scan.tail_frames,
        tail_start=scan.tail_start,
        profile=s.get("profile") or None,
        time_base=time_bases.get(index, Fraction(1)),
    )


def _declared_duration(s: dict[str, Any], fmt: dict[str, Any]) -> tuple[Fraction | None, bool]:
    """The duration the container's header declares, and whether it is the video stream's own:
    the stream's, else Matroska's DURATION tag, else the whole file's (only in formats whose
    header states it; then it covers every stream)."""
    d = _frac(s.get("duration"))
    if d is None:
        tag = (s.get("tags") or {}).get("DURATION")
        if tag:
            try:
                h, m, sec = tag.split(":")
                d = Fraction(int(h) * 3600 + int(m) * 60) + Fraction(sec)
            except ValueError:
                d = None
    if d is not None:
        return d, True
    if str(fmt.get("format_name", "")).split(",")[0] in ("matroska", "mov", "avi", "mxf"):
        return _frac(fmt.get("duration")), False
    return None, False


def _refuse_if_truncated(path: Path, s: dict[str, Any], fmt: dict[str, Any], scan: _PacketScan, index: int,
                         fps: Fraction) -> None:
    """Raise :class:`DamagedMediaError` when the packets end before the container says the film does."""
    reasons = []
    declared = s.get("nb_frames")
    if declared not in (None, "", "N/A") and int(declared) > scan.video_packets:
        reasons.append(f"the container declares {int(declared)} frames but only {scan.video_packets} are in the file")
    want, own = _declared_duration(s, fmt)
    first = scan.first_pts if scan.first_pts is not None else Fraction(0)
    origin = min(_frac(s.get("start_time")) or first, first)
    got_end = (scan.end if own else scan.file_end) or Fraction(0)
    slack = max(Fraction(1, 2), 5 / fps)
    if want is not None and want > 0 and (got_end - origin) + slack < want:
        what = "of picture" if own else "(all streams)"
        reasons.append(f"it declares {float(want):.3f} s {what} but the packets end at {float(got_end - origin):.3f} s")
    signs = [w for w in scan.warnings if any(k in w.lower() for k in TRUNCATION_SIGNS)]
    if not reasons and not signs:
        return
    if signs and not reasons:
        reasons.append(f"reading it stops with: {signs[-1].rstrip('.')}")
    from .tail import readable_frames

    readable = readable_frames(path, index, scan, _frac(s.get("time_base")) or Fraction(1))
    raise DamagedMediaError(
        f"{path}: truncated or damaged: {'; '.join(reasons)}; {readable} frame(s) "
        f"({float(readable / fps):.2f} s) are readable ({_size(path)}). {DAMAGED_ADVICE}",
        readable_frames=readable,
    )


def frames_from_duration(duration: Fraction, fps: Fraction) -> int:
    return math.floor(duration * fps + Fraction(1, 2))


from .tail import check_tail  # noqa: E402,F401  (the last GOP's decode check lives in .tail)
