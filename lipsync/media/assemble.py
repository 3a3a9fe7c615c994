"""Reassembly: join per-shot segments and untouched source shots into one film.

The picture goes through exactly one lossy encode.  Untouched shots are decoded
from the source in its own pixel format and piped straight into the final
encoder; re-rendered shots come from lossless segments (FFV1, same pixel format)
written by the lip-sync stage.  Runs of consecutive untouched shots are read by
one seeking reader, so the source is decoded once.  The output keeps the source's
frame count, rate, size, pixel format, sample aspect ratio, colour tags and
rotation; the dubbed mix is muxed in, tagged with the dub's language.

The delivered codec follows the source by default (``settings=None`` or
``codec='auto'``): H.264 in, H.264 out; HEVC in, HEVC out; ProRes in, ProRes out
(in MOV/MKV); see :func:`lipsync.media.frames.delivery_settings` for the rest and
for the quality (unchanged shots >= 45 dB PSNR against the source).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

from dubcore.records import Shot, ShotList
from dubcore.timebase import FrameRange

from .errors import MediaError
from .frames import AUTO, LOSSLESS, EncodeSettings, FrameReader, FrameWriter, delivery_settings
from .probe import MediaInfo, VideoStream, probe

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class AssemblyResult:
    path: Path
    frame_count: int
    shots_from_source: tuple[str, ...]
    shots_from_segments: tuple[str, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: The encoder and settings the picture was delivered with (after 'auto' was resolved).
    settings: EncodeSettings | None = None


def audio_args_for(path: Path, codec: str | None = None) -> tuple[str, ...]:
    """Audio encoding for a container: AAC 320k in MP4, 24-bit PCM in MOV/MKV, unless told."""
    ext = path.suffix.lower()
    if codec is None:
        codec = "aac" if ext in (".mp4", ".m4v") else "pcm_s24le"
    if codec == "aac":
        return ("-c:a", "aac", "-b:a", "320k")
    return ("-c:a", codec)


def write_segment(path: str | Path, frames: Iterable[np.ndarray], *, like: VideoStream, count: int) -> Path:
    """Write a shot's frames losslessly (FFV1 in Matroska) in the source's pixel format.

    ``frames`` are raw frames in ``like.pix_fmt`` (what :class:`FrameReader` yields
    with ``pix_fmt=like.pix_fmt``), exactly ``count`` of them.
    """
    with FrameWriter(
        path,
        width=like.width,
        height=like.height,
        fps=like.fps,
        pix_fmt=like.pix_fmt,
        settings=LOSSLESS,
        like=like,
        expected_frames=count,
    ) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)


def _runs(shots: ShotList, segments: Mapping[str, Path]) -> Iterator[tuple[str, FrameRange, list[Shot]]]:
    """Group consecutive shots into ('source', range, shots) and ('segment', range, [shot]) runs."""
    pending: list[Shot] = []
    for shot in shots:
        if shot.id in segments:
            if pending:
                yield "source", FrameRange(pending[0].frames.start, pending[-1].frames.end), pending
                pending = []
            yield "segment", shot.frames, [shot]
        else:
            pending.append(shot)
    if pending:
        yield "source", FrameRange(pending[0].frames.start, pending[-1].frames.end), pending


def assemble(
    source: str | Path,
    shots: ShotList,
    out: str | Path,
    *,
    audio: str | Path | None,
    segments: Mapping[str, Path] | None = None,
    settings: EncodeSettings | None = None,
    audio_codec: str | None = None,
    info: MediaInfo | None = None,
    progress: Progress | None = None,
    audio_language: str | None = None,
    codec_source: VideoStream | None = None,
) -> AssemblyResult:
    """Write the film at ``out`` (atomically) from ``source`` with ``segments`` replacing shots.

    ``settings`` None (or ``codec='auto'``) follows the codec family of
    ``codec_source`` (the master as delivered to us, when ``source`` is an
    intermediate such as a VFR conform), else of ``source``.  ``audio_language``
    (BCP 47, e.g. the manifest's ``dub.language``) tags the audio as ISO 639-2."""
    source = Path(source)
    out = Path(out)
    info = info or probe(source)
    video = info.require_video()
    settings = settings or AUTO
    if settings.codec in ("auto", "source"):
        settings = delivery_settings(codec_source or video, out.suffix, crf=settings.crf, preset=settings.preset,
                                     audio_language=settings.audio_language)
    segments = dict(segments or {})
    unknown = sorted(set(segments) - {s.id for s in shots})
    if unknown:
        raise MediaError(f"segments given for shots not in the shot list of {source}: {unknown}")
    if shots.frame_count != video.frame_count:
        raise MediaError(
            f"shot list covers {shots.frame_count} frames but {source} has {video.frame_count}; "
            f"re-run `dub shots {source}`"
        )
    done = 0
    from_source: list[str] = []
    from_segments: list[str] = []
    with FrameWriter(
        out,
        width=video.width,
        height=video.height,
        fps=video.fps,
        pix_fmt=video.pix_fmt,
        settings=settings,
        like=video,
        audio=audio,
        audio_codec=audio_args_for(out, audio_codec),
        expected_frames=video.frame_count,
        audio_language=audio_language if audio is not None else None,
    ) as writer:
        for kind, frames, run in _runs(shots, segments):
            if kind == "source":
                reader = FrameReader(source, frames=frames, pix_fmt=video.pix_fmt, info=info)
                from_source.extend(s.id for s in run)
            else:
                seg = Path(segments[run[0].id])
                seg_info = probe(seg)
                seg_video = seg_info.require_video()
                problems = []
                if seg_video.frame_count != frames.duration:
                    problems.append(f"{seg_video.frame_count} frames, shot has {frames.duration}")
                if (seg_video.width, seg_video.height) != (video.width, video.height):
                    problems.append(f"size {seg_video.width}x{seg_video.height}, film is {video.width}x{video.height}")
                if problems:
                    raise MediaError(f"{seg}: segment for {run[0].id} does not fit: {'; '.join(problems)}")
                reader = FrameReader(seg, pix_fmt=video.pix_fmt, info=seg_info)
                from_segments.append(run[0].id)
            with reader:
                for frame in reader:
                    writer.write(frame)
                    done += 1
                    if progress is not None and (done % 32 == 0 or done == video.frame_count):
                        progress(done, video.frame_count)
    result_video = probe(out).require_video()
    if result_video.frame_count != video.frame_count:
        out.unlink(missing_ok=True)
        raise MediaError(f"{out}: has {result_video.frame_count} frames, source has {video.frame_count}; output removed")
    return AssemblyResult(out, video.frame_count, tuple(from_source), tuple(from_segments), settings=settings)
