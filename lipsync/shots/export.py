"""Shot lists on disk: versioned JSON, CMX 3600 EDL, and OpenTimelineIO."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

from dubcore.records import ShotList
from dubcore.schema import atomic_path, read_json, write_json
from dubcore.timebase import Timecode, format_rate, is_drop_frame_rate


def write_shots(path: str | Path, shots: ShotList) -> Path:
    return write_json(path, "shots", shots.to_dict())


def read_shots(path: str | Path) -> ShotList:
    return ShotList.from_dict(read_json(path, "shots"))


#: CMX 3600 limits: reel names are at most 8 characters of A-Z, 0-9 and '_'; the title
#: line at most 70 characters.  Anything else in a name goes to a ``*`` comment line.
EDL_REEL_CHARS = 8
EDL_TITLE_CHARS = 70


def _ascii_fold(text: str) -> str:
    """``text`` reduced to ASCII: accents dropped (e -> e), other letters removed."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if ord(c) < 128 and not unicodedata.combining(c))


def edl_reel(name: str) -> str:
    """A CMX 3600 reel name for ``name``: upper-case A-Z, 0-9 and '_', 8 characters at most.

    Deterministic; a name that folds to nothing (e.g. all Japanese) becomes ``R`` and
    6 hex digits of its hash, so different films get different reels."""
    folded = re.sub(r"[^A-Z0-9_]+", "_", _ascii_fold(name).upper()).strip("_")
    if not folded:
        return "R" + hashlib.sha1(name.encode("utf-8")).hexdigest()[:6].upper()
    return folded[:EDL_REEL_CHARS]


def edl_title(name: str) -> str:
    """The ``TITLE:`` of an EDL: printable ASCII, 70 characters at most (the real name is kept in
    the ``* FROM CLIP NAME:`` comments)."""
    folded = re.sub(r"[^\x20-\x7e]+", " ", _ascii_fold(name))
    folded = re.sub(r"\s+", " ", folded).strip()
    if not re.search(r"[A-Za-z0-9]", folded):
        folded = f"FILM {hashlib.sha1(name.encode('utf-8')).hexdigest()[:8].upper()}"
    return folded[:EDL_TITLE_CHARS].rstrip()


def _comment(text: str) -> str:
    """One comment line's text: control characters (a newline in a file name) become spaces."""
    return "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)


def edl_text(shots: ShotList, title: str | None = None, reel: str | None = None, record_start: int = 0) -> str:
    """CMX 3600 EDL: one cut event per shot; source and record in the film's timecode.

    The record side starts at ``record_start`` frames (0, or e.g. one hour of frames
    for the ``01:00:00:00`` convention).  Reel and title are sanitised to what the
    format allows (:func:`edl_reel`, :func:`edl_title`; reel defaults to one derived
    from the film's name); the film's real file name, whatever its characters, is in
    each event's ``* FROM CLIP NAME:`` comment (the file is UTF-8).
    """
    drop = is_drop_frame_rate(shots.fps)
    name = Path(shots.source).name
    reel_name = edl_reel(reel if reel is not None else Path(shots.source).stem)
    lines = [f"TITLE: {edl_title(title or Path(shots.source).stem)}", f"FCM: {'DROP FRAME' if drop else 'NON-DROP FRAME'}", ""]
    for n, shot in enumerate(shots, start=1):
        src_in = Timecode.from_frame(shot.frames.start, shots.fps)
        src_out = Timecode.from_frame(shot.frames.end, shots.fps)
        rec_in = Timecode.from_frame(record_start + shot.frames.start, shots.fps)
        rec_out = Timecode.from_frame(record_start + shot.frames.end, shots.fps)
        lines.append(f"{n:03d}  {reel_name:<8} V     C        {src_in} {src_out} {rec_in} {rec_out}")
        lines.append(f"* FROM CLIP NAME: {_comment(name)}")
        lines.append(f"* COMMENT: {shot.id} frames [{shot.frames.start}, {shot.frames.end}) at {format_rate(shots.fps)} fps")
        lines.append("")
    return "\n".join(lines)


def write_edl(path: str | Path, shots: ShotList, **kwargs) -> Path:  # type: ignore[no-untyped-def]
    """Write the EDL (UTF-8), atomically: complete or not there at all."""
    text = edl_text(shots, **kwargs)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_shot_files(shots: ShotList, json_path: str | Path, edl: str | Path | None = None,
                     otio: str | Path | None = None) -> list[Path]:
    """shots.json and, when asked, the EDL and OTIO timeline, all or none.

    Every file is first written to a temporary beside its destination; the
    temporaries are moved into place only when all of them are written, so a
    failure in any writer leaves none of the files behind (and no older one
    replaced)."""
    import os
    import tempfile

    wanted = [(Path(json_path), write_shots)]
    if edl is not None:
        wanted.append((Path(edl), write_edl))
    if otio is not None:
        wanted.append((Path(otio), write_otio))
    staged: list[tuple[Path, Path]] = []
    try:
        for final, writer in wanted:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".staged{final.suffix}", dir=final.parent)
            os.close(fd)
            staged.append((Path(tmp), final))
            writer(tmp, shots)
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
    return [final for _, final in staged]


def write_otio(path: str | Path, shots: ShotList) -> Path:
    """OpenTimelineIO timeline: one clip per shot, referencing the source film."""
    import opentimelineio as otio

    rate = float(shots.fps)
    media = otio.schema.ExternalReference(
        target_url=Path(shots.source).resolve().as_uri(),
        available_range=otio.opentime.TimeRange(
            otio.opentime.RationalTime(0, rate), otio.opentime.RationalTime(shots.frame_count, rate)
        ),
    )
    timeline = otio.schema.Timeline(name=Path(shots.source).stem)
    track = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    for shot in shots:
        clip = otio.schema.Clip(
            name=shot.id,
            media_reference=media.clone(),
            source_range=otio.opentime.TimeRange(
                otio.opentime.RationalTime(shot.frames.start, rate), otio.opentime.RationalTime(shot.frames.duration, rate)
            ),
        )
        clip.metadata["dub-film"] = {"shot_id": shot.id, "frames": shot.frames.to_list(), "fps": format_rate(shots.fps)}
        track.append(clip)
    timeline.tracks.append(track)
    with atomic_path(path) as tmp:
        otio.adapters.write_to_file(timeline, str(tmp), adapter_name="otio_json")
    return Path(path)
