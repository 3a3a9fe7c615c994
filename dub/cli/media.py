"""``dub probe`` and ``dub shots``: the film itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from dubcore.schema import write_json

from .common import _bar, _errors


def probe(
    media: Path = typer.Argument(..., help="Video or audio file."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the probe as JSON here instead of stdout."),
) -> None:
    """Describe a media file: streams, exact frame rate, frame count, rotation, VFR."""
    from dubcore.schema import versioned
    from lipsync.media.probe import probe as probe_media

    with _errors():
        info = probe_media(media)
    if out:
        write_json(out, "probe", info.to_dict())
    else:
        typer.echo(json.dumps(versioned("probe", info.to_dict()), indent=2))


def shots(
    video: Path = typer.Argument(..., help="The film (or any video)."),
    out: Path = typer.Option(..., "--out", "-o", help="shots.json to write."),
    edl: Optional[Path] = typer.Option(None, help="Also write a CMX 3600 EDL here."),
    otio: Optional[Path] = typer.Option(None, help="Also write an OpenTimelineIO timeline here."),
    detector: list[str] = typer.Option(["content", "fade"], "--detector", "-d", help="Detectors to run (repeat)."),
    min_shot_frames: int = typer.Option(15, min=1, help="Shortest shot, in frames."),
    threshold: float = typer.Option(27.0, help="ContentDetector threshold."),
) -> None:
    """Split a film into shots, frame-accurate, with exact timecodes."""
    from lipsync.shots import detect_shots, write_shot_files

    with _errors(), _bar("shots") as (progress, _):
        shot_list = detect_shots(
            video,
            detectors=detector,
            min_shot_frames=min_shot_frames,
            detector_options={"content": {"threshold": threshold}},
            progress=progress,
        )
        write_shot_files(shot_list, out, edl, otio)  # all three or none
    for shot in shot_list:
        typer.echo(f"{shot.id}  {shot.start_timecode} - {shot.end_timecode}  frames [{shot.frames.start}, {shot.frames.end})")
