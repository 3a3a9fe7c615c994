"""Shot lists on disk: versioned JSON, CMX 3600 EDL, and OpenTimelineIO."""

from __future__ import annotations

from pathlib import Path

from dubcore.records import ShotList
from dubcore.schema import atomic_path, read_json, write_json
from dubcore.timebase import Timecode, format_rate, is_drop_frame_rate


def write_shots(path: str | Path, shots: ShotList) -> Path:
    return write_json(path, "shots", shots.to_dict())


def read_shots(path: str | Path) -> ShotList:
    return ShotList.from_dict(read_json(path, "shots"))


def edl_text(shots: ShotList, title: str | None = None, reel: str = "AX", record_start: int = 0) -> str:
    """CMX 3600 EDL: one cut event per shot; source and record in the film's timecode.

    The record side starts at ``record_start`` frames (0, or e.g. one hour of frames
    for the ``01:00:00:00`` convention).
    """
    drop = is_drop_frame_rate(shots.fps)
    lines = [f"TITLE: {title or Path(shots.source).stem}", f"FCM: {'DROP FRAME' if drop else 'NON-DROP FRAME'}", ""]
    for n, shot in enumerate(shots, start=1):
        src_in = Timecode.from_frame(shot.frames.start, shots.fps)
        src_out = Timecode.from_frame(shot.frames.end, shots.fps)
        rec_in = Timecode.from_frame(record_start + shot.frames.start, shots.fps)
        rec_out = Timecode.from_frame(record_start + shot.frames.end, shots.fps)
        lines.append(f"{n:03d}  {reel:<8} V     C        {src_in} {src_out} {rec_in} {rec_out}")
        lines.append(f"* FROM CLIP NAME: {Path(shots.source).name}")
        lines.append(f"* COMMENT: {shot.id} frames [{shot.frames.start}, {shot.frames.end}) at {format_rate(shots.fps)} fps")
        lines.append("")
    return "\n".join(lines)


def write_edl(path: str | Path, shots: ShotList, **kwargs) -> Path:  # type: ignore[no-untyped-def]
    with atomic_path(path) as tmp:
        tmp.write_text(edl_text(shots, **kwargs), encoding="ascii")
    return Path(path)


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
