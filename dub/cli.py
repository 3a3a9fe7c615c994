"""``dub``: one subcommand per stage, each usable alone on a file; a thin layer over the library.

Every file written is versioned JSON (a ``schema`` field) or a standard format
(EDL, OTIO, RTTM, SRT), and appears only when complete.
"""

from __future__ import annotations

import json
import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dubcore.manifest import ManifestError
from dubcore.schema import SchemaError, write_json

app = typer.Typer(
    name="dub",
    help="dub-film: make the actors on screen speak the dubbed language.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    """Turn the library's clear errors into one red line and a non-zero exit, no traceback."""
    from lipsync.media.errors import MediaError

    try:
        yield
    except (MediaError, ManifestError, SchemaError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))


@contextmanager
def _bar(description: str) -> Iterator:  # type: ignore[type-arg]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=False, disable=not err.is_terminal) as progress:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        yield lambda done, total: update(description, done, total), update


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress and decisions.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
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


@app.command()
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
    from lipsync.shots import detect_shots, write_edl, write_otio, write_shots

    with _errors(), _bar("shots") as (progress, _):
        shot_list = detect_shots(
            video,
            detectors=detector,
            min_shot_frames=min_shot_frames,
            detector_options={"content": {"threshold": threshold}},
            progress=progress,
        )
        write_shots(out, shot_list)
        if edl:
            write_edl(edl, shot_list)
        if otio:
            write_otio(otio, shot_list)
    for shot in shot_list:
        typer.echo(f"{shot.id}  {shot.start_timecode} - {shot.end_timecode}  frames [{shot.frames.start}, {shot.frames.end})")


@app.command()
def run(
    manifest: Path = typer.Argument(..., help="Job manifest (YAML or JSON)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (overrides the manifest's)."),
) -> None:
    """Run the whole dub-film flow locally on one job."""
    from dubcore.manifest import load_manifest

    with _errors():
        job = load_manifest(manifest)
        if out is not None:
            job = job.model_copy(update={"output": str(out.resolve())})
        if not job.output:
            raise ValueError(f"{manifest}: no output folder; give `--out DIR` or `output:` in the manifest")
        result = _run_flow(job)
    typer.echo(json.dumps(result, indent=2))


def _run_flow(job):  # type: ignore[no-untyped-def]
    from flows.dub_film import dub_film
    from tasks import progress as task_progress

    with _bar("run") as (_, update):
        task_progress.add_sink(update)
        try:
            return dub_film(job)
        finally:
            task_progress.remove_sink(update)


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-output"), "--out", "-o", help="Output folder of the demo job."),
    seconds: int = typer.Option(12, min=3, help="Length of the generated sample film."),
) -> None:
    """Make a sample film with a dubbed mix (dialogue + M&E) and run the whole flow on it."""
    from dubcore.manifest import write_manifest

    from .sample import make_sample_job

    with _errors():
        job = make_sample_job(out / "sample", seconds=seconds)
        write_manifest(out / "sample" / "manifest.yaml", job)
        job = job.model_copy(update={"output": str((out / "result").resolve())})
        result = _run_flow(job)
    typer.echo(json.dumps(result, indent=2))
    typer.echo(f"manifest: {out / 'sample' / 'manifest.yaml'}\nresult:   {out / 'result'}")


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
