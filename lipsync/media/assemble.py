"""Reassembly: join per-shot segments and untouched source shots into one film.

The picture goes through exactly one lossy encode and every frame is decoded once:

* a re-rendered shot's segment is already encoded in the delivery codec by the
  lip-sync stage (:meth:`lipsync.render.engine.LipSyncEngine.render_shot`); its
  packets are copied;
* each run of consecutive untouched shots is decoded from the source once and
  piped straight into one encoder with the same settings
  (:func:`lipsync.media.frames.transcode`: no frame passes through Python);
* the parts are joined without decoding (:func:`lipsync.media.join.join_parts`,
  timestamps exact on the frame grid) and muxed with the dubbed mix in one
  stream-copy pass (:func:`lipsync.media.join.mux_film`).

A segment that cannot be joined as it is (another codec, pixel format or stream
headers: a lossless FFV1 segment, say) is encoded again from its pixels, and the
result says so.  The output keeps the source's frame count, rate, size, pixel
format, sample aspect ratio, colour tags and rotation; the dubbed mix is muxed
in, tagged with the dub's language.

The delivered codec follows the source by default (``settings=None`` or
``codec='auto'``): H.264 in, H.264 out; HEVC in, HEVC out; ProRes in, ProRes out
(in MOV/MKV); see :func:`lipsync.media.frames.delivery_settings` for the rest and
for the quality (unchanged shots >= 45 dB PSNR against the source).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

from dubcore.records import Shot, ShotList
from dubcore.timebase import FrameRange

from .errors import MediaError
from .frames import AUTO, LOSSLESS, EncodeSettings, FrameReader, FrameWriter, delivery_settings, transcode
from .join import ENCODER_CODECS, Part, Signature, count_frames, join_parts, mux_film, signature
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
    #: How each part of the picture got into the film: ``{"frames": [a, b), "shots": [...], "how": ...}``
    #: with ``how`` one of "encoded from source" (decoded and encoded once here), "copied" (a segment's
    #: packets, not decoded) or "encoded again" (a segment that could not be joined as it was).
    parts: tuple[dict, ...] = field(default_factory=tuple)


def audio_args_for(path: Path, codec: str | None = None) -> tuple[str, ...]:
    """Audio encoding for a container: AAC 320k in MP4, 24-bit PCM in MOV/MKV, unless told."""
    ext = path.suffix.lower()
    if codec is None:
        codec = "aac" if ext in (".mp4", ".m4v") else "pcm_s24le"
    if codec == "aac":
        return ("-c:a", "aac", "-b:a", "320k")
    return ("-c:a", codec)


def write_segment(path: str | Path, frames: Iterable[np.ndarray], *, like: VideoStream, count: int,
                  settings: EncodeSettings = LOSSLESS) -> Path:
    """Write a shot's frames in the source's pixel format (lossless FFV1 in Matroska unless ``settings``).

    ``frames`` are raw frames in ``like.pix_fmt`` (what :class:`FrameReader` yields
    with ``pix_fmt=like.pix_fmt``), exactly ``count`` of them.
    """
    with part_writer(path, like, settings, count) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)


def resolve_settings(settings: EncodeSettings | None, video: VideoStream, container: str,
                     codec_source: VideoStream | None = None) -> EncodeSettings:
    """``settings`` with ``codec='auto'`` resolved against the master (``codec_source``, else ``video``)."""
    settings = settings or AUTO
    if settings.codec in ("auto", "source"):
        settings = delivery_settings(codec_source or video, container, crf=settings.crf, preset=settings.preset,
                                     audio_language=settings.audio_language)
    return settings


def part_writer(path: str | Path, video: VideoStream, settings: EncodeSettings, count: int | None = None,
                pix_fmt: str | None = None) -> FrameWriter:
    """The encoder of one part of a film: the delivery settings, the source's size, rate, pixel format and
    tags, no audio, no rotation tag (the joined film is tagged once).  Every part of a film is written
    through this one builder, so all parts share their stream headers and join without re-encoding.
    ``pix_fmt`` is the layout of the frames written (default: the source's own)."""
    return FrameWriter(path, width=video.width, height=video.height, fps=video.fps, pix_fmt=pix_fmt or video.pix_fmt,
                       settings=replace(settings, pix_fmt=settings.pix_fmt or video.pix_fmt, audio_language=None),
                       like=video, expected_frames=count, tag_rotation=False)


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


def _joinable(sig: Signature, settings: EncodeSettings, video: VideoStream, reference: Signature | None) -> list[str]:
    """Why a segment cannot be joined as it is (empty: it can)."""
    why = []
    codec = ENCODER_CODECS.get(settings.codec, settings.codec)
    if sig.codec != codec:
        why.append(f"codec {sig.codec}, delivery is {codec}")
    if (sig.width, sig.height) != (video.width, video.height):
        why.append(f"size {sig.width}x{sig.height}, film is {video.width}x{video.height}")
    if sig.pix_fmt != (settings.pix_fmt or video.pix_fmt):
        why.append(f"pixel format {sig.pix_fmt}, film is {settings.pix_fmt or video.pix_fmt}")
    if not why and reference is not None and sig.extradata != reference.extradata:
        why.append("other encoder settings (stream headers differ)")
    return why


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
    (BCP 47, e.g. the manifest's ``dub.language``) tags the audio as ISO 639-2.
    Segments should be encoded with the same resolved settings
    (:func:`resolve_settings`, :func:`part_writer`) to be copied rather than encoded again."""
    source = Path(source)
    out = Path(out)
    info = info or probe(source)
    video = info.require_video()
    settings = resolve_settings(settings, video, out.suffix, codec_source)
    segments = dict(segments or {})
    unknown = sorted(set(segments) - {s.id for s in shots})
    if unknown:
        raise MediaError(f"segments given for shots not in the shot list of {source}: {unknown}")
    if shots.frame_count != video.frame_count:
        raise MediaError(
            f"shot list covers {shots.frame_count} frames but {source} has {video.frame_count}; "
            f"re-run `dub shots {source}`"
        )
    from_source: list[str] = []
    from_segments: list[str] = []
    notes: list[str] = []
    parts: list[Part] = []
    how: list[dict] = []
    total = video.frame_count
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    with tempfile.TemporaryDirectory(prefix=".assemble-", dir=out.parent if out.parent.exists() else None) as tmp:
        work = Path(tmp)
        reference: Signature | None = None
        pending: list[tuple[int, Path, FrameRange, str]] = []  # segments, checked once a part of ours is known
        for kind, frames, run in _runs(shots, segments):
            ids = [s.id for s in run]
            if kind == "source":
                part = work / f"source-{frames.start:09d}.mkv"
                reader = FrameReader(source, frames=frames, pix_fmt=video.pix_fmt, info=info)
                transcode(reader, part_writer(part, video, settings))
                reference = reference or signature(part)
                from_source.extend(ids)
                parts.append(Part(part, frames.duration, f"source frames [{frames.start}, {frames.end})"))
                how.append({"frames": frames.to_list(), "shots": ids, "how": "encoded from source"})
                advance(frames.duration)
            else:
                from_segments.append(ids[0])
                pending.append((len(parts), Path(segments[ids[0]]), frames, ids[0]))
                parts.append(Part(Path(segments[ids[0]]), frames.duration, ids[0]))
                how.append({"frames": frames.to_list(), "shots": ids, "how": "copied"})
        for index, seg, frames, shot_id in pending:
            sig = signature(seg)
            if (sig.width, sig.height) != (video.width, video.height):
                raise MediaError(f"{seg}: segment for {shot_id} does not fit: size {sig.width}x{sig.height}, "
                                 f"film is {video.width}x{video.height}")
            why = _joinable(sig, settings, video, reference)
            if why:  # encoded again from its pixels: the one case with a second encode
                part = work / f"segment-{frames.start:09d}.mkv"
                seg_info = probe(seg)
                seg_video = seg_info.require_video()
                if seg_video.frame_count != frames.duration:
                    raise MediaError(f"{seg}: segment for {shot_id} does not fit: {seg_video.frame_count} frames, "
                                     f"shot has {frames.duration}")
                transcode(FrameReader(seg, pix_fmt=video.pix_fmt, info=seg_info), part_writer(part, video, settings))
                reference = reference or signature(part)
                parts[index] = Part(part, frames.duration, shot_id)
                how[index]["how"] = "encoded again"
                notes.append(f"{shot_id}: segment {seg.name} encoded again for delivery ({'; '.join(why)})")
            else:
                reference = reference or sig
            advance(frames.duration)
        joined = work / f"picture{out.suffix.lower() if out.suffix.lower() in ('.mp4', '.mov', '.m4v', '.mkv') else '.mkv'}"
        join_parts(parts, video.fps, joined)
        mux_film(joined, out, audio=audio, audio_args=audio_args_for(out, audio_codec),
                 audio_language=(audio_language or settings.audio_language) if audio is not None else None,
                 rotation=video.rotation or 0, codec=ENCODER_CODECS.get(settings.codec, settings.codec))
    delivered = count_frames(out)
    if delivered != video.frame_count:
        out.unlink(missing_ok=True)
        raise MediaError(f"{out}: has {delivered} frames, source has {video.frame_count}; output removed")
    for note in notes:
        log.warning("%s", note)
    return AssemblyResult(out, video.frame_count, tuple(from_source), tuple(from_segments), tuple(notes),
                          settings=settings, parts=tuple(how))
