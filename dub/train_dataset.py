"""`dub train dataset`: build a training set from films (the frames where a tracked face is the active speaker)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .train import train_app


@train_app.command("dataset")
def dataset(
    films: list[str] = typer.Argument(..., help="Films (local paths or s3:// URIs)."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to create (dataset.json + clips/); must be new or empty."),
    names: Optional[Path] = typer.Option(None, "--names", help='JSON naming the characters per film: {"FILM": {"character": NAME} | {"sides": {"left": A, "right": B}} | {"tracks": {TRACK_ID: NAME}}}. Without it a film is one character.'),
    val: Optional[list[str]] = typer.Option(None, "--val", help="A film (name or path) whose characters go to validation; repeatable."),
    val_fraction: float = typer.Option(0.0, "--val-fraction", min=0.0, max=1.0, help="Also send this fraction of characters (by hash) to validation."),
    asd_threshold: float = typer.Option(0.0, "--asd-threshold", help="A face speaks where its median-filtered Light-ASD score is above this (the `dub asd` rule); the top-scoring speaking face of a frame is kept."),
    min_clip_frames: int = typer.Option(5, "--min-clip-frames", min=1, help="Shortest clip kept, in 25 fps frames."),
    max_clip_frames: int = typer.Option(250, "--max-clip-frames", min=1, help="Longer runs are cut into clips of at most this."),
    face_size: int = typer.Option(96, "--face-size", min=16, help="Crop size in pixels."),
    store: Optional[Path] = typer.Option(None, help="Model store folder."),
    face_weights: str = typer.Option("retinaface_mobilenet0.25", "--face-weights", help="Face detector weights (entry or path)."),
    asd_weights: str = typer.Option("light_asd", "--asd-weights", help="Light-ASD weights (entry or path)."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
) -> None:
    """Cut FILMS into talking-face clips (inference crops + the film's own audio, aligned to the sample)."""
    import json

    from lipsync import store as model_store
    from lipsync.faces.detect import build_detector
    from lipsync.models.light_asd import load_light_asd
    from lipsync.speakers.asd import AsdParams
    from lipsync.train.dataset import build_dataset

    from .cli import _bar, _store_errors

    if min_clip_frames > max_clip_frames:
        raise typer.BadParameter(f"--min-clip-frames {min_clip_frames} > --max-clip-frames {max_clip_frames}")
    with _store_errors(), _bar("dataset") as (_, update):
        from lipsync.train.dataset import _check_films

        sources = _sources(films, names)
        _check_films(sources)  # a missing film is named before any model is loaded
        detector = build_detector("retinaface", weights=face_weights, store=store, device=device)
        model = load_light_asd(model_store.resolve(asd_weights, store), device)
        entry = model_store.entry_for(asd_weights, "light_asd")
        path = build_dataset(sources, out, detector=detector, asd_model=model, face_size=face_size,
                             min_clip_frames=min_clip_frames, max_clip_frames=max_clip_frames, asd_params=AsdParams(threshold=asd_threshold),
                             asd_info={"weights": asd_weights, "entry": entry.name, "trained_on": entry.meta.get("trained_on")},
                             val_films=val or (), val_fraction=val_fraction, progress=update)
    doc = json.loads(path.read_text(encoding="utf-8"))
    for s in ("train", "val"):
        c = doc["counts"][s]
        typer.echo(f"{s}: {c['clips']} clip(s), {c['frames']} frames, {c['characters']} character(s), {doc['hours'][s]:.4f} h")
    typer.echo(f"{path}")


def _sources(films: list[str], names: Optional[Path]) -> list:
    """FilmSource per film, with the character names of ``--names`` (unknown film names refused)."""
    import json

    from lipsync.train.dataset import name_sources

    table: dict = {}
    if names is not None:
        try:
            table = json.loads(names.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(f"{names}: not readable JSON ({exc})", param_hint="--names") from exc
        if not isinstance(table, dict):
            raise typer.BadParameter(f"{names}: expected an object keyed by film name", param_hint="--names")
    try:
        return name_sources(films, table, where=str(names))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--names") from exc
