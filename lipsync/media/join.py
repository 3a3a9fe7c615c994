"""Join encoded parts of a film into one picture stream without decoding them, then mux the sound.

A delivered film is a list of *parts* (a rendered shot's segment, a run of untouched
shots encoded once from the source), each encoded separately with the same encoder
settings, so each starts with an IDR picture and refers to nothing outside itself
(a closed GOP at every part boundary).  :func:`join_parts` copies their packets one
after the other into one stream (no decode, no second lossy encode) and rebuilds
every timestamp exactly on the frame grid: the packet that shows frame ``i`` of a
part starting at film frame ``s`` gets ``pts = s + i`` frames, and decode timestamps
run one frame apart, ``depth`` frames behind (``depth`` = the largest reordering
of any part, so ``dts <= pts`` and the sequence stays strictly increasing across
boundaries).  The parts must share codec, size, pixel format and stream headers
(``extradata``); :func:`signature` tells a caller which do.

:func:`mux_film` then muxes the joined picture (stream copy) with the dubbed mix
into the delivered container: one ffmpeg process per film.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

from dubcore.schema import atomic_path

from .errors import MediaError
from .language import container_language
from .probe import media_arg, require_tool

#: libav muxer of each delivery container.
MUXERS: dict[str, str] = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}

#: Decoder name (as ffprobe / libav report a stream's codec) of each encoder the pipeline delivers with.
ENCODER_CODECS: dict[str, str] = {"libx264": "h264", "libx265": "hevc", "prores_ks": "prores", "ffv1": "ffv1",
                                  "h264_nvenc": "h264", "hevc_nvenc": "hevc"}


@dataclass(frozen=True)
class Part:
    """One encoded piece of the film: ``path`` must hold exactly ``frames`` pictures."""

    path: Path
    frames: int
    label: str = ""  # what it is, for errors ("shot-0003", "source frames [0, 120)")


@dataclass(frozen=True)
class Signature:
    """What must be equal for two parts to join into one decodable stream."""

    codec: str
    width: int
    height: int
    pix_fmt: str
    extradata: bytes


def signature(path: str | Path) -> Signature:
    """The picture stream's codec, size, pixel format and stream headers (read in-process, no ffprobe)."""
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise MediaError(f"{path}: no video stream")
            s = c.streams.video[0]
            cc = s.codec_context
            return Signature(cc.name, cc.width, cc.height, cc.format.name if cc.format else "",
                             bytes(cc.extradata or b""))
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path}: cannot be read as a video part: {exc}") from None


def _timescale(fps: Fraction) -> Fraction:
    """The stream time base: ``1 / (fps numerator x 2^k)``, at least 1/10000 (the rule of ffmpeg's MP4 muxer for
    an encoder at ``fps``, so a frame is a whole number of ticks and the film is timed as one encoded directly)."""
    scale = fps.numerator
    while scale < 10000:
        scale *= 2
    return Fraction(1, scale)


def count_frames(path: str | Path) -> int:
    """The number of pictures in the first video stream (its packets, counted in-process)."""
    import av

    with av.open(str(path)) as c:
        return sum(1 for p in c.demux(c.streams.video[0]) if p.size)


def _ranks(path: Path, expected: int, label: str) -> tuple[list[int], int]:
    """Presentation index of every packet (decode order) and the part's reordering depth."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        pts: list[int] = []
        for packet in c.demux(stream):
            if packet.size == 0:  # the demuxer's end-of-stream marker
                continue
            if packet.pts is None:
                raise MediaError(f"{path} ({label}): a packet without a timestamp; write parts to Matroska or MP4")
            pts.append(packet.pts)
    if len(pts) != expected:
        raise MediaError(f"{path} ({label}): holds {len(pts)} frames, {expected} expected; render it again")
    order = {p: i for i, p in enumerate(sorted(set(pts)))}
    if len(order) != len(pts):
        raise MediaError(f"{path} ({label}): two pictures share a timestamp; render it again")
    ranks = [order[p] for p in pts]
    depth = max((k - r for k, r in enumerate(ranks)), default=0)
    return ranks, depth


def join_parts(parts: Sequence[Part], fps: Fraction, out: str | Path, *,
               progress: Callable[[int, int], None] | None = None) -> int:
    """Copy the packets of ``parts`` into one stream at ``out`` (container by its suffix), timestamps exact.

    Returns the number of frames.  Raises :class:`MediaError` naming the part when one holds
    another number of frames than it should or does not match the first part's stream."""
    import av

    out = Path(out)
    muxer = MUXERS.get(out.suffix.lower())
    if muxer is None:
        raise MediaError(f"{out}: cannot join parts into a {out.suffix} file; use one of {', '.join(MUXERS)}")
    if not parts:
        raise MediaError(f"{out}: no parts to join")
    first = signature(parts[0].path)
    plans = []
    for part in parts:
        sig = first if part is parts[0] else signature(part.path)
        if sig != first:
            what = [name for name in ("codec", "width", "height", "pix_fmt", "extradata")
                    if getattr(sig, name) != getattr(first, name)]
            raise MediaError(f"{part.path} ({part.label}): its {', '.join(what)} differ from {parts[0].path} "
                             "(parts must be encoded with the same settings to be joined)")
        plans.append(_ranks(part.path, part.frames, part.label))
    depth = max(d for _, d in plans)
    total = sum(p.frames for p in parts)
    frame = Fraction(fps.denominator, fps.numerator)  # one tick = one frame
    with atomic_path(out) as tmp, av.open(str(parts[0].path)) as template:
        with av.open(str(tmp), "w", format=muxer) as dst:
            tstream = template.streams.video[0]
            ostream = dst.add_stream_from_template(tstream)
            ostream.time_base = _timescale(fps)
            if tstream.sample_aspect_ratio:  # anamorphic pixels stay anamorphic (the container says so)
                ostream.sample_aspect_ratio = tstream.sample_aspect_ratio
                ostream.codec_context.sample_aspect_ratio = tstream.sample_aspect_ratio
            start = 0
            for part, (ranks, _) in zip(parts, plans):
                with av.open(str(part.path)) as src:
                    k = 0
                    for packet in src.demux(src.streams.video[0]):
                        if packet.size == 0:
                            continue
                        packet.stream = ostream
                        packet.time_base = frame
                        packet.pts = start + ranks[k]
                        packet.dts = start + k - depth
                        packet.duration = 1
                        dst.mux(packet)
                        k += 1
                start += part.frames
                if progress is not None:
                    progress(start, total)
    return total


def mux_film(video: str | Path, out: str | Path, *, audio: str | Path | None, audio_args: Sequence[str],
             audio_language: str | None = None, rotation: int = 0, codec: str = "") -> Path:
    """Write ``out`` (atomically): the picture of ``video`` copied as it is, the first audio stream of
    ``audio`` encoded with ``audio_args``, tagged with the audio language and the display rotation."""
    out = Path(out)
    cmd = [require_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", media_arg(video)]
    if audio is not None:
        cmd += ["-i", media_arg(audio)]
    cmd += ["-map", "0:v:0"]
    if audio is not None:
        cmd += ["-map", "1:a:0", *audio_args]
        if audio_language:
            cmd += ["-metadata:s:a:0", f"language={container_language(audio_language, out.suffix)}"]
    cmd += ["-c:v", "copy"]
    if rotation:  # honoured by ffmpeg when the picture is copied
        cmd += ["-metadata:s:v:0", f"rotate={rotation}"]
    suffix = out.suffix.lower()
    if suffix in (".mp4", ".mov", ".m4v"):
        cmd += ["-movflags", "+faststart"]
        if codec == "hevc":
            cmd += ["-tag:v", "hvc1"]  # the HEVC tag Apple players and QuickTime expect
    elif suffix == ".mkv":
        cmd += ["-fflags", "+bitexact"]
    with atomic_path(out) as tmp:
        proc = subprocess.run([*cmd, media_arg(tmp)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise MediaError(f"{out}: muxing the picture with the sound failed: {proc.stderr.strip()}")
    return out
