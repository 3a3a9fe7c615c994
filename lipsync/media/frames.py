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
from .language import container_language
from .probe import MediaInfo, VideoStream, media_arg, probe, require_tool

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class EncodeSettings:
    """How the final picture is encoded.

    ``codec='auto'`` (what :func:`lipsync.media.assemble.assemble` uses unless told)
    follows the source's codec family, see :func:`delivery_settings`.  An explicit
    encoder (libx264, libx265, prores_ks, ffv1, ...) is used as given; ``crf=None``
    with x264/x265 takes the measured default of :data:`DELIVERY_CRF`.
    ``codec='ffv1'`` is mathematically lossless."""

    codec: str = "libx264"
    crf: int | None = 8
    preset: str | None = "medium"
    pix_fmt: str | None = None  # None: same as the input frames
    extra: tuple[str, ...] = ()
    profile: str | None = None  # encoder profile (ProRes: proxy, lt, standard, hq, 4444, 4444xq)
    #: Language of the delivered audio (BCP 47 or ISO 639-2, e.g. a manifest's dub.language),
    #: written as the container's ISO 639-2 tag; None leaves it undetermined.
    audio_language: str | None = None

    def args(self, pix_fmt: str) -> list[str]:
        if self.codec in ("auto", "source"):
            raise MediaError("EncodeSettings(codec='auto') must be resolved against the source first "
                             "(lipsync.media.frames.delivery_settings)")
        out = ["-c:v", self.codec]
        if self.codec in ("libx264", "libx265"):
            crf = self.crf if self.crf is not None else DELIVERY_CRF[self.codec]
            out += ["-crf", str(crf)]
            if self.preset:
                out += ["-preset", self.preset]
            if self.codec == "libx265":
                out += ["-x265-params", "log-level=error"]
        elif self.codec == "ffv1":
            out += ["-level", "3", "-g", "1", "-slicecrc", "1"]
        elif self.codec.startswith("prores"):
            profile = PRORES_PROFILES.get((self.profile or "hq").lower().replace(" ", "").replace("_", ""))
            if profile is None:
                raise MediaError(f"ProRes profile {self.profile!r} unknown; use one of {', '.join(PRORES_PROFILES)}")
            out += ["-profile:v", str(profile), "-vendor", "apl0"]
        out += ["-pix_fmt", self.pix_fmt or pix_fmt]
        return out + list(self.extra)


#: CRF of the delivered picture when the job does not set one, per encoder.  Chosen by
#: measurement so unchanged shots keep every frame at >= 45 dB PSNR against the master,
#: PSNR over the Y'CbCr planes (ffmpeg's psnr filter, the codec-standard measure); the x264
#: value also keeps >= 45 dB in RGB (the measure of tests/test_run.py and test_assemble.py,
#: where CRF 10 gave 44.8 dB on one frame).  x265 needs a lower CRF than x264 for the same
#: PSNR; it keeps >= 45 dB Y'CbCr at CRF 10 but only 42 dB in RGB on the synthetic worst case.
#: ================================  ====  ==================  ===============  ==============
#: master                            enc   CRF                 min frame PSNR   size / master
#: ================================  ====  ==================  ===============  ==============
#: synthetic 320x240 H.264 (tests)   x264  **8** / 10 / 12     51.8/50.5/49.6   1.61/1.45/1.30
#:   same, RGB PSNR                  x264  **8** / 10 / 12     46.6/45.4/44.3
#: synthetic 320x240 H.264 (tests)   x265  8 / **10** / 12     49.2/47.6/46.4   2.25/1.98/1.73
#: grainy 720p H.264 CRF 18, 34 Mb/s x264  10 / 12 / 14 / 16   49.6/48.6/46.9/45.2  1.50/1.25/1.23/1.05
#: (tests/test_delivery.py, 320x240 with grain: H.264 -> x264 CRF 8: 53.0 dB, 2.5x; HEVC -> x265 CRF 10: 51.1 dB, 2.9x;
#:  ProRes HQ -> ProRes HQ: 52.5 dB, 1.03x)
#: grainy 720p H.264 CRF 18, 34 Mb/s x265  10 / 12             46.8/45.3        1.45/1.24
#: grainy 720p HEVC CRF 22, 4.3 Mb/s x265  **10** / 12 / 16     48.2/47.1/45.5   2.62/2.11/1.44
#:   same master, x264 (the old default family)  10 / 16        49.8/45.3        6.13/1.80
#: bench_delivery 1080p25 60 s H.264 6.96 Mb/s  x264  **8** (10)   57.2 (55.7)      2.39 (2.12): 16.7 Mb/s
#: bench_delivery 1080p25 60 s HEVC 6.20 Mb/s   x265  **10**       54.3             2.85: 17.8 Mb/s
#: ================================  ====  ==================  ===============  ==============
#:
#: A lossy master re-encoded at a quality that keeps 45 dB is larger than the master
#: (its compression noise is coded again); bench/bench_delivery.py prints the sizes
#: of a 1-minute 1080p job.  x265 needs a lower CRF than x264 for the same PSNR.
DELIVERY_CRF: dict[str, int] = {"libx264": 8, "libx265": 10}

#: prores_ks ``-profile:v`` numbers by profile name (ffprobe's profile, lower-cased, no spaces).
PRORES_PROFILES: dict[str, int] = {"proxy": 0, "lt": 1, "standard": 2, "hq": 3, "4444": 4, "4444xq": 5}

#: Encoder of the delivered picture by the source's codec (ffprobe codec_name): the same family.
SOURCE_ENCODERS: dict[str, str] = {"h264": "libx264", "hevc": "libx265", "prores": "prores_ks", "ffv1": "ffv1"}

#: Encoders each delivery container holds.
CONTAINER_CODECS: dict[str, tuple[str, ...]] = {
    ".mp4": ("libx264", "libx265"),
    ".m4v": ("libx264", "libx265"),
    ".mov": ("libx264", "libx265", "prores_ks"),
    ".mkv": ("libx264", "libx265", "prores_ks", "ffv1"),
}


def delivery_settings(
    like: VideoStream,
    container: str,
    *,
    codec: str = "auto",
    crf: int | None = None,
    preset: str | None = "medium",
    audio_language: str | None = None,
) -> EncodeSettings:
    """The encode of a delivered film whose picture comes from ``like`` (the probed master).

    ``codec='auto'`` (or ``'source'``) follows the master's family: H.264 -> libx264,
    HEVC -> libx265, ProRes -> prores_ks at the master's profile (HQ when unknown),
    FFV1 -> FFV1.  Any other master codec (MPEG-2, VP9, AV1, DNxHD, ...) and a family
    the ``container`` (``.mp4``/``.mov``/``.mkv`` or the output file name) cannot hold
    (ProRes or FFV1 in MP4) are delivered as H.264 (libx264), with a warning naming
    the container that would keep the family.  x264/x265 use ``crf`` or
    :data:`DELIVERY_CRF` (>= 45 dB PSNR on unchanged shots).  An explicit ``codec``
    is used as given.
    """
    from dataclasses import replace

    return replace(_delivery(like, container, codec, crf, preset), audio_language=audio_language)


def _delivery(like: VideoStream, container: str, codec: str, crf: int | None, preset: str | None) -> EncodeSettings:
    ext = container if container.startswith(".") else "." + container.rsplit(".", 1)[-1]
    ext = ext.lower()
    if codec not in ("auto", "source"):
        if codec == "ffv1":
            return LOSSLESS
        keep_profile = codec.startswith("prores") and like.codec == "prores"
        return EncodeSettings(codec=codec, crf=crf, preset=preset, profile=like.profile if keep_profile else None)
    family = SOURCE_ENCODERS.get(like.codec)
    fits = CONTAINER_CODECS.get(ext, ("libx264",))
    if family is None:
        log.info("%s master: delivered as H.264 (libx264); set options.video_codec to choose another encoder", like.codec)
        family = "libx264"
    elif family not in fits:
        log.warning("%s master: %s cannot hold %s, delivered as H.264 (libx264); set options.container: %s to keep it",
                    like.codec, ext, family, "mov" if family.startswith("prores") else "mkv")
        family = "libx264"
    if family == "ffv1":
        return LOSSLESS
    if family.startswith("prores"):
        return EncodeSettings(codec="prores_ks", crf=None, preset=None, profile=like.profile or "hq")
    return EncodeSettings(codec=family, crf=crf, preset=preset)


LOSSLESS = EncodeSettings(codec="ffv1", crf=None, preset=None)


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
    ) -> None:
        self.path = Path(path)
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
            self.command(self._tmp), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, bufsize=0
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
            assert proc.stdin is not None
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
        if failure is None and self.like is not None and self.like.rotation:
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


#: The delivered film's default: the source's codec family at the measured quality (see delivery_settings).
AUTO = EncodeSettings(codec="auto", crf=None, preset="medium")
