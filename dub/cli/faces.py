"""``dub faces``: detect, track and smooth the faces of every shot."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lipsync.faces.detect import DEFAULT_DETECTOR

from .common import _bar, _store_errors


def faces(
    video: Path = typer.Argument(..., help="The film or clip."),
    out: Path = typer.Option(..., "--out", "-o", help="faces.json to write."),
    shots_file: Optional[Path] = typer.Option(None, "--shots", help="shots.json of the film (default: detect shots now)."),
    weights: str = typer.Option(DEFAULT_DETECTOR, help="Detector weights: a model-store entry or a checkpoint path."),
    store: Optional[Path] = typer.Option(None, help="Model store folder."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(16, min=1, help="Frames per detector batch."),
    max_size: int = typer.Option(640, min=32, help="Frames are downscaled so their longer side is at most this for detection."),
    no_smooth: bool = typer.Option(False, "--no-smooth", help="Keep the raw (tracked, interpolated) boxes."),
    render: Optional[Path] = typer.Option(None, help="Also write a debug video with the tracks drawn."),
) -> None:
    """Detect faces, track them through each shot and smooth them; write faces.json."""
    from lipsync.faces.detect import build_detector
    from lipsync.faces.facesfile import write_faces
    from lipsync.faces.pipeline import FaceTrackingParams, render_tracks, track_film_faces
    from lipsync.media.probe import probe as probe_media
    from lipsync.shots import detect_shots, read_shots

    with _store_errors(), _bar("faces") as (progress, _):
        info = probe_media(video)
        shot_list = read_shots(shots_file) if shots_file else detect_shots(video, info=info)
        detector = build_detector(weights, device=device, store=store, batch_size=batch_size, max_size=max_size)
        params = FaceTrackingParams(smooth=not no_smooth)
        results = track_film_faces(video, shot_list, detector, params, batch_size=batch_size, info=info, progress=progress)
        tracks = [t for r in results for t in r.tracks]
        write_faces(
            out,
            source=str(video),
            fps=shot_list.fps,
            frame_count=shot_list.frame_count,
            shots=list(shot_list),
            tracks=tracks,
            dropped=[d for r in results for d in r.dropped_dicts()],
            params={"detector": detector.describe(), **params.to_dict()},
            quality={tid: q for r in results for tid, q in r.quality.items()},
        )
        if render:
            render_tracks(video, tracks, render, info=info)
    for r in results:
        weak = [t.id for t in r.tracks if not r.castable(t.id)]
        typer.echo(f"{r.shot_id}: {len(r.tracks)} track(s)" + (f", {len(r.dropped)} dropped" if r.dropped else "")
                   + (f", {len(weak)} not castable" if weak else ""))
        for tid in weak:
            typer.echo(f"  {tid}: {r.quality[tid].reason}")
