"""Streaming frame decode and encode through ffmpeg pipes, in bounded memory.

:class:`FrameReader` yields one frame at a time from an ``ffmpeg`` child process;
:class:`FrameWriter` feeds one frame at a time into another.  Neither ever holds
more than a frame (plus the pipe buffer), whatever the length of the film.

Frame ranges are exact: a reader given ``FrameRange(a, b)`` seeks to half a frame
before frame ``a`` (ffmpeg then decodes from the previous key frame and drops
everything before that instant) and stops after ``b - a`` frames; a short read is
an error, never a silently shorter shot.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from dubcore.schema import atomic_path
from dubcore.timebase import FrameRange, format_rate

from .errors import MediaError
from .encode import (  # noqa: F401  (re-exported: the encode settings live in .encode)
    AUTO, CONTAINER_CODECS, DELIVERY_CRF, LOSSLESS, PRORES_PROFILES, SOURCE_ENCODERS, EncodeSettings, delivery_settings,
)
from .language import container_language
from .probe import MediaInfo, VideoStream, media_arg, probe, require_tool

log = logging.getLogger(__name__)

#: Environment variable naming an ffmpeg ``-hwaccel`` for every decode (``cuda`` for NVDEC), unset: software.
HWACCEL_ENV = "DUB_HWACCEL"


@dataclass(frozen=True)
class PixelFormat:
    """Layout of one raw frame: ``planes`` of (width divisor, height divisor) and bytes per sample."""

    name: str
    channels: int  # samples per pixel for packed formats; 0 for planar
    planes: tuple[tuple[int, int], ...]
    bytes_per_sample: int

    @property
    def packed(self) -> bool:
        return self.channels > 0

    def frame_bytes(self, width: int, height: int) -> int:
        if self.packed:
            return width * height * self.channels * self.bytes_per_sample
        total = 0
        for wdiv, hdiv in self.planes:
            total += -(-width // wdiv) * -(-height // hdiv)
        return total * self.bytes_per_sample


PIXEL_FORMATS: dict[str, PixelFormat] = {
    "bgr24": PixelFormat("bgr24", 3, ((1, 1),), 1),
    "rgb24": PixelFormat("rgb24", 3, ((1, 1),), 1),
    "gray": PixelFormat("gray", 1, ((1, 1),), 1),
    "yuv420p": PixelFormat("yuv420p", 0, ((1, 1), (2, 2), (2, 2)), 1),
    "yuvj420p": PixelFormat("yuvj420p", 0, ((1, 1), (2, 2), (2, 2)), 1),
    "yuv422p": PixelFormat("yuv422p", 0, ((1, 1), (2, 1), (2, 1)), 1),
    "yuvj422p": PixelFormat("yuvj422p", 0, ((1, 1), (2, 1), (2, 1)), 1),
    "yuv444p": PixelFormat("yuv444p", 0, ((1, 1), (1, 1), (1, 1)), 1),
    "yuvj444p": PixelFormat("yuvj444p", 0, ((1, 1), (1, 1), (1, 1)), 1),
    "yuv420p10le": PixelFormat("yuv420p10le", 0, ((1, 1), (2, 2), (2, 2)), 2),
    "yuv422p10le": PixelFormat("yuv422p10le", 0, ((1, 1), (2, 1), (2, 1)), 2),
    "yuv444p10le": PixelFormat("yuv444p10le", 0, ((1, 1), (1, 1), (1, 1)), 2),
    "yuv420p12le": PixelFormat("yuv420p12le", 0, ((1, 1), (2, 2), (2, 2)), 2),
    "yuv422p12le": PixelFormat("yuv422p12le", 0, ((1, 1), (2, 1), (2, 1)), 2),
    "yuv444p12le": PixelFormat("yuv444p12le", 0, ((1, 1), (1, 1), (1, 1)), 2),
}


def pixel_format(name: str, where: str = "") -> PixelFormat:
    try:
        return PIXEL_FORMATS[name]
    except KeyError:
        prefix = f"{where}: " if where else ""
        raise MediaError(
            f"{prefix}pixel format {name!r} is not supported for frame-exact processing; "
            f"supported: {', '.join(sorted(PIXEL_FORMATS))}. Convert the source first, e.g. "
            f"`ffmpeg -i IN -pix_fmt yuv420p10le -c:v ffv1 OUT.mkv`"
        ) from None


def frame_array(buf: bytes | bytearray | memoryview, fmt: PixelFormat, width: int, height: int) -> np.ndarray:
    """Wrap one raw frame: ``(H, W, C)`` for packed formats, a flat array for planar ones."""
    dtype = np.uint8 if fmt.bytes_per_sample == 1 else np.dtype("<u2")
    arr = np.frombuffer(buf, dtype=dtype)
    if fmt.packed:
        return arr.reshape(height, width, fmt.channels) if fmt.channels > 1 else arr.reshape(height, width)
    return arr


class _StderrDrain:
    """Collect a child's stderr on a thread so the pipe never fills and blocks it."""

    def __init__(self, stream) -> None:  # type: ignore[no-untyped-def]
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream) -> None:  # type: ignore[no-untyped-def]
        for line in iter(stream.readline, b""):
            if len(self._chunks) < 200:
                self._chunks.append(line)
        stream.close()

    def text(self) -> str:
        self._thread.join(timeout=5)
        return b"".join(self._chunks).decode("utf-8", "replace").strip()


class FrameReader:
    """Iterate the frames of a video (or a frame range of it), one at a time.

    ``pix_fmt`` is the raw layout wanted (``bgr24`` for models, the source's own
    format for frame-identical passthrough).  ``size=(w, h)`` scales on the way out
    of the decoder with ``scale_flags`` (area by default: the right filter to
    downscale for detection).  Use as a context manager or iterate once.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        frames: FrameRange | None = None,
        pix_fmt: str = "bgr24",
        size: tuple[int, int] | None = None,
        scale_flags: str = "area",
        info: MediaInfo | None = None,
    ) -> None:
        self.path = Path(path)
        self.info = info or probe(self.path)
        self.video: VideoStream = self.info.require_video()
        self.fmt = pixel_format(pix_fmt, str(self.path))
        if frames is None:
            frames = FrameRange(0, self.video.frame_count)
        if frames.end > self.video.frame_count:
            raise MediaError(
                f"{self.path}: frames [{frames.start}, {frames.end}) asked for, but the video has "
                f"{self.video.frame_count} frames"
            )
        self.frames = frames
        self.width, self.height = size if size is not None else (self.video.width, self.video.height)
        self.scale_flags = scale_flags
        self.frame_bytes = self.fmt.frame_bytes(self.width, self.height)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: _StderrDrain | None = None
        self.frames_read = 0

    def command(self) -> list[str]:
        cmd = [require_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-noautorotate"]
        if os.environ.get(HWACCEL_ENV):  # e.g. cuda: NVDEC decodes, frames come back to system memory
            cmd += ["-hwaccel", os.environ[HWACCEL_ENV]]
        if self.frames.start > 0:
            # Half a frame before the wanted frame: robust to timestamp rounding.
            seek = (Fraction(self.frames.start) - Fraction(1, 2)) / self.video.fps
            cmd += ["-ss", f"{float(seek):.6f}"]
        cmd += ["-i", media_arg(self.path), "-map", f"0:{self.video.index}", "-an", "-sn", "-dn"]
        filters = []
        if (self.width, self.height) != (self.video.width, self.video.height):
            filters.append(f"scale={self.width}:{self.height}:flags={self.scale_flags}")
        if filters:
            cmd += ["-vf", ",".join(filters)]
        cmd += [
            "-fps_mode",
            "passthrough",
            "-frames:v",
            str(self.frames.duration),
            "-pix_fmt",
            self.fmt.name,
            "-f",
            "rawvideo",
            "pipe:1",
        ]
        return cmd

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.frames.duration == 0:
            return
        self._proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
        )
        self._stderr = _StderrDrain(self._proc.stderr)
        stdout = self._proc.stdout
        assert stdout is not None
        try:
            while self.frames_read < self.frames.duration:
                buf = bytearray(self.frame_bytes)
                view = memoryview(buf)
                got = 0
                while got < self.frame_bytes:
                    n = stdout.readinto(view[got:])
                    if not n:
                        break
                    got += n
                if got < self.frame_bytes:
                    self._fail_short()
                self.frames_read += 1
                yield frame_array(buf, self.fmt, self.width, self.height)
        finally:
            self.close()

    def _fail_short(self) -> None:
        proc = self._proc
        assert proc is not None
        proc.wait()
        detail = self._stderr.text() if self._stderr else ""
        want = self.frames.start + self.frames.duration
        raise MediaError(
            f"{self.path}: decoding stopped after frame {self.frames.start + self.frames_read} of "
            f"[{self.frames.start}, {want}) (file truncated or damaged?)" + (f": {detail}" if detail else "")
        )

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        if proc.stdout:
            proc.stdout.close()
        proc.wait()


def read_frames(path: str | Path, **kwargs) -> Iterator[np.ndarray]:  # type: ignore[no-untyped-def]
    """Shorthand for iterating a :class:`FrameReader`."""
    with FrameReader(path, **kwargs) as reader:
        yield from reader



class FrameWriter:
    """Encode raw frames written one at a time; the file appears at ``path`` only when complete.

    ``audio`` (optional) is a file whose first audio stream is muxed in, encoded with
    ``audio_codec``.  Colour tags and rotation of ``like`` (a probed source stream)
    are copied so the output is tagged exactly as the source.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        width: int,
        height: int,
        fps: Fraction,
        pix_fmt: str,
        settings: EncodeSettings = EncodeSettings(),
        like: VideoStream | None = None,
        audio: str | Path | None = None,
        audio_codec: Sequence[str] = ("-c:a", "aac", "-b:a", "320k"),
        expected_frames: int | None = None,
        audio_language: str | None = None,
        tag_rotation: bool = True,
    ) -> None:
        self.path = Path(path)
        self.tag_rotation = tag_rotation  # False for a part of a film (the joined film is tagged once)
        self.width, self.height, self.fps = width, height, fps
        self.fmt = pixel_format(pix_fmt, str(self.path))
        self.frame_bytes = self.fmt.frame_bytes(width, height)
        self.settings = settings
        self.like = like
        self.audio = Path(audio) if audio is not None else None
        self.audio_codec = list(audio_codec)
        self.expected_frames = expected_frames
        self.audio_language = audio_language or settings.audio_language
        if settings.codec in ("auto", "source"):
            if like is None:
                raise MediaError(f"{self.path}: codec 'auto' follows a source; give like= (the probed source stream)")
            self.settings = delivery_settings(like, self.path.suffix, crf=settings.crf, preset=settings.preset,
                                              audio_language=settings.audio_language)
        self.frames_written = 0
        self._stdin: int | object = subprocess.PIPE  # or another process's stdout (FrameWriter.copy_from)
        self._atomic = None
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: _StderrDrain | None = None

    def command(self, out: Path) -> list[str]:
        rate = format_rate(self.fps)
        cmd = [require_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
        cmd += ["-f", "rawvideo", "-pix_fmt", self.fmt.name, "-s", f"{self.width}x{self.height}", "-framerate", rate]
        if self.like is not None:
            cmd += _color_input_args(self.like)
        cmd += ["-i", "pipe:0"]
        if self.audio is not None:
            cmd += ["-i", media_arg(self.audio)]
        cmd += ["-map", "0:v:0"]
        if self.audio is not None:
            cmd += ["-map", "1:a:0", *self.audio_codec]
            if self.audio_language:
                cmd += ["-metadata:s:a:0", f"language={container_language(self.audio_language, out.suffix)}"]
        cmd += self.settings.args(self.fmt.name)
        sar = _sar(self.like) if self.like is not None and (self.like.width, self.like.height) == (self.width, self.height) else None
        if sar is not None:  # anamorphic pixels stay anamorphic (no scaling: only the flag)
            cmd += ["-vf", f"setsar={sar}"]
        cmd += ["-r", rate, "-fps_mode", "cfr"]
        if self.like is not None:
            cmd += _color_output_args(self.like)
        if out.suffix.lower() in (".mp4", ".mov", ".m4v"):
            cmd += ["-movflags", "+faststart"]
            if self.settings.codec == "libx265":
                cmd += ["-tag:v", "hvc1"]  # the HEVC tag Apple players and QuickTime expect
        elif out.suffix.lower() == ".mkv":  # no random segment UID: the same frames give the same bytes
            cmd += ["-fflags", "+bitexact"]
        cmd += [media_arg(out)]
        return cmd

    def __enter__(self) -> "FrameWriter":
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        self._proc = subprocess.Popen(
            self.command(self._tmp), stdin=self._stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, bufsize=0
        )
        self._stderr = _StderrDrain(self._proc.stderr)
        return self

    def write(self, frame: np.ndarray | bytes) -> None:
        assert self._proc is not None and self._proc.stdin is not None, "use FrameWriter as a context manager"
        data = frame.tobytes() if isinstance(frame, np.ndarray) else bytes(frame)
        if len(data) != self.frame_bytes:
            raise MediaError(
                f"{self.path}: frame {self.frames_written} has {len(data)} bytes, expected {self.frame_bytes} "
                f"({self.width}x{self.height} {self.fmt.name})"
            )
        try:
            self._proc.stdin.write(data)
        except BrokenPipeError:
            self._proc.wait()
            raise MediaError(f"{self.path}: encoder stopped: {self._stderr.text() if self._stderr else ''}") from None
        self.frames_written += 1

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        proc, atomic = self._proc, self._atomic
        assert proc is not None and atomic is not None
        failure: BaseException | None = exc
        if exc is None:
            if proc.stdin is not None:
                proc.stdin.close()
            rc = proc.wait()
            if rc != 0:
                failure = MediaError(f"{self.path}: encoder failed (exit {rc}): {self._stderr.text()}")
            elif self.expected_frames is not None and self.frames_written != self.expected_frames:
                failure = MediaError(
                    f"{self.path}: {self.frames_written} frames written, {self.expected_frames} expected"
                )
        else:
            proc.kill()
            proc.wait()
        if failure is None and self.tag_rotation and self.like is not None and self.like.rotation:
            try:
                _tag_rotation(self._tmp, self.like.rotation)
            except MediaError as exc:
                failure = exc
        if failure is None:
            atomic.__exit__(None, None, None)
        else:
            atomic.__exit__(type(failure), failure, None)
            if failure is not exc:
                raise failure


def transcode(reader: FrameReader, writer: FrameWriter) -> int:
    """Decode ``reader``'s frames straight into ``writer``'s encoder: two ffmpeg processes joined by an
    OS pipe, so no frame passes through Python (and the encoder is invoked exactly as for frames written
    one at a time, so both give the same stream headers).  Returns the number of frames the decoder gave;
    fewer than ``reader.frames`` is an error naming the file."""
    if (reader.width, reader.height, reader.fmt.name) != (writer.width, writer.height, writer.fmt.name):
        raise MediaError(f"{reader.path} -> {writer.path}: reader gives {reader.width}x{reader.height} {reader.fmt.name}, "
                         f"writer takes {writer.width}x{writer.height} {writer.fmt.name}")
    decoder = subprocess.Popen(reader.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    drain = _StderrDrain(decoder.stderr)
    try:
        writer._stdin = decoder.stdout
        with writer:
            assert decoder.stdout is not None
            decoder.stdout.close()  # the encoder holds the pipe now
            rc = decoder.wait()
            if rc != 0:
                raise MediaError(f"{reader.path}: decoding frames [{reader.frames.start}, {reader.frames.end}) failed "
                                 f"(exit {rc}): {drain.text()}")
    finally:
        if decoder.poll() is None:
            decoder.kill()
            decoder.wait()
    return reader.frames.duration


def _sar(like: VideoStream | None) -> str | None:
    """The source's sample aspect ratio as ``num/den`` when it says one (None: unknown)."""
    raw = getattr(like, "sample_aspect_ratio", None)
    if not raw or raw in ("0:1", "N/A", "unknown"):
        return None
    try:
        num, den = (int(v) for v in str(raw).replace("/", ":").split(":"))
    except ValueError:
        return None
    return f"{num}/{den}" if num > 0 and den > 0 else None


def _tag_rotation(path: Path | None, rotation: int) -> None:
    """Tag ``path`` with a display rotation.  ffmpeg 5 drops the tag when encoding and
    honours it only when stream-copying, so this is a lossless remux in place."""
    assert path is not None
    tagged = path.with_name(path.stem + ".rot" + path.suffix)
    cmd = [require_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", media_arg(path)]
    cmd += ["-map", "0", "-c", "copy", "-metadata:s:v:0", f"rotate={rotation}", media_arg(tagged)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tagged.unlink(missing_ok=True)
        raise MediaError(f"{path}: could not tag rotation {rotation}: {proc.stderr.strip()}")
    os.replace(tagged, path)


_COLOR_KEYS = (
    ("color_range", "-color_range"),
    ("color_space", "-colorspace"),
    ("color_transfer", "-color_trc"),
    ("color_primaries", "-color_primaries"),
)


def _color_input_args(v: VideoStream) -> list[str]:
    """Tag the raw input with the source's colour so no conversion is inserted."""
    return _color_output_args(v)


def _color_output_args(v: VideoStream) -> list[str]:
    out: list[str] = []
    for attr, flag in _COLOR_KEYS:
        value = getattr(v, attr)
        if value and value != "unknown":
            out += [flag, value]
    return out


def remove_quietly(path: str | os.PathLike[str]) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
