"""The last GOP of a video, decoded: is the end of the master readable?

:func:`check_tail` (run by preflight) decodes only the last GOP (one GOP, not the
film) and refuses a file whose last frames do not decode or whose decoder
reports errors there; :func:`readable_frames` counts what does decode.
"""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

from .probe import (
    _LOG_PREFIX, DAMAGED_ADVICE, INDEXED_FORMATS, DamagedMediaError, MediaInfo, _PacketScan, media_arg, require_tool,
)


def _tail_decodes(path: Path, index: int, start: Fraction | None, tb: Fraction) -> tuple[int, list[str]]:
    """Frames decoded whose time is at or after the key frame at ``start`` (the last GOP), and the
    decoder's errors.  Decoding starts a second earlier (a key frame before it, or wherever an
    index-less container's seek lands), so only the last GOP or two are decoded."""
    args = [require_tool("ffprobe"), "-v", "error", "-select_streams", str(index),
            "-show_entries", "frame=best_effort_timestamp", "-of", "csv=p=0"]
    if start is not None:
        args += ["-read_intervals", f"{float(start - 1):.6f}%"]
    proc = subprocess.run([*args, media_arg(path)], capture_output=True, text=True, errors="replace")
    decoded = 0
    for line in proc.stdout.splitlines():
        value = line.strip().strip(",")
        if not value or value == "N/A":
            continue
        try:
            t = int(value) * tb
        except ValueError:
            continue
        if start is None or t >= start:
            decoded += 1
    errors = [_LOG_PREFIX.sub("", ln.strip()) for ln in proc.stderr.splitlines() if ln.strip()]
    return decoded, errors


def readable_frames(path: Path, index: int, scan: _PacketScan, tb: Fraction) -> int:
    """Frames that decode: every packet before the last key frame, plus what decodes of the last GOP."""
    before = scan.video_packets - scan.tail_frames
    decoded, _ = _tail_decodes(path, index, scan.tail_start, tb)
    return before + min(decoded, scan.tail_frames)


def check_tail(info: MediaInfo) -> int:
    """Decode the last GOP of ``info``'s video (one GOP, not the film) and refuse the file when
    fewer frames decode than it holds or the decoder reports errors.  Returns the frame count."""
    video = info.require_video()
    path = Path(info.path)
    decoded, errors = _tail_decodes(path, video.index, video.tail_start, video.time_base)
    expected = video.tail_frames
    if info.format_name.split(",")[0] not in INDEXED_FORMATS:
        errors = []  # MPEG-TS/PS seek to a byte guess, mid-GOP: the decoder's complaints there are not damage
    if expected and decoded >= expected and not errors:
        return video.frame_count
    readable = video.frame_count - expected + min(decoded, expected)
    detail = f"; decoder: {errors[-1]}" if errors else ""
    raise DamagedMediaError(
        f"{path}: damaged: the last GOP (from {float(video.tail_start or 0):.3f} s, {expected} frames) decodes to "
        f"{decoded} frame(s){detail}; {readable} of {video.frame_count} frames are readable. {DAMAGED_ADVICE}",
        readable_frames=readable,
    )
