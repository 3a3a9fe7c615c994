"""``dub run`` and ``dub demo``: the whole dub-film flow on one job."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from lipsync.faces.detect import DEFAULT_DETECTOR

from . import common
from .common import _bar, _errors, _fail, _quiet_console


def run(
    manifest: str = typer.Argument(..., help="Job manifest (YAML or JSON): a path, or a URI such as s3://bucket/jobs/film.yaml."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output folder or URI (s3://bucket/prefix); overrides the manifest's."),
) -> None:
    """Run the whole dub-film flow locally on one job."""
    from dubcore.manifest import load_manifest

    with _errors(catch_all=True):
        if "://" in manifest and not manifest.startswith("file://"):  # read by the flow, from storage
            out_uri = out if out is None or "://" in out else str(Path(out).resolve())
            result = _run_flow(None, manifest=manifest, output=out_uri)
        else:
            job = load_manifest(manifest)
            if out is not None:
                job = job.model_copy(update={"output": out if "://" in out else str(Path(out).resolve())})
            if not job.output:
                raise ValueError(f"{manifest}: no output folder; give `--out DIR` or `output:` in the manifest")
            result = _run_flow(job)
    typer.echo(json.dumps(result, indent=2))


def _run_flow(job, **params):  # type: ignore[no-untyped-def]
    # A studio network is closed: no telemetry; a loaded machine may need time to start the local server.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from flows.dub_film import dub_film
    from tasks import progress as task_progress

    if not common._VERBOSE:
        _quiet_console()

    with _bar("run") as (_, update):
        task_progress.add_sink(update)
        try:
            return dub_film(job, **params)
        finally:
            task_progress.remove_sink(update)


def demo(
    out: Path = typer.Option(Path("demo-output"), "--out", "-o", help="Output folder of the demo job."),
    seconds: int = typer.Option(12, min=3, help="Length of the generated sample film (only without ../shared/data)."),
    generated: bool = typer.Option(False, "--generated", help="Use the generated 3-shot sample even when ../shared/data is there."),
) -> None:
    """Make a sample job and run the whole flow on it: two real speakers taking turns, dubbed in German
    (../shared/data), else a generated 3-shot film.  Lip-syncs when wav2lip_gan is in the model store;
    without it, the run renders the casting preview (preview.mp4) instead of new lips."""
    from dubcore.manifest import write_manifest
    from lipsync import store as model_store

    from ..sample import make_demo_job, make_sample_job, shared_data

    def present(name: str) -> bool:
        return model_store.path_for(model_store.get_entry(name)).is_file()

    with _errors():
        data = None if generated else shared_data()
        if data is not None:
            missing = [n for n in (DEFAULT_DETECTOR, "light_asd") if not present(n)]
            if missing:
                _fail(f"the demo needs {' and '.join(missing)} in the model store: `dub models pull {' '.join(missing)}` "
                      "(`make demo` does it)")
            job = make_demo_job(out / "sample", data)
            typer.echo(f"sample: {data / 'asd-two-face-composite'} (two GRID speakers taking turns), dubbed in German "
                       f"(ALICE on the left, BOB on the right) from {data / 'talking-heads' / 'deyu.wav'}")
        else:
            job = make_sample_job(out / "sample", seconds=seconds)
            typer.echo("note: ../shared/data is absent, so the demo runs on a generated 3-shot film with no face and no "
                       "speech: it shows shots, the dubbed mix and assembly only (no speakers, casting, preview or QC)")
        lipsync = present("wav2lip_gan")
        if lipsync:
            job = job.model_copy(update={"options": job.options.model_copy(update={"lipsync_checkpoint": "wav2lip_gan"})})
        write_manifest(out / "sample" / "manifest.yaml", job)
        job = job.model_copy(update={"output": str((out / "result").resolve())})
        result = _run_flow(job)
    typer.echo(json.dumps(result, indent=2))
    typer.echo(f"manifest: {out / 'sample' / 'manifest.yaml'}\nresult:   {out / 'result'}")
    if not lipsync:
        preview = out / "result" / "preview.mp4"
        typer.echo("lips: NOT re-rendered: the Wav2Lip weights (wav2lip_gan) are not in the model store, so the film "
                   "carries the dubbed mix over the original picture"
                   + (f"; {preview} shows the casting instead (each face boxed with the voice that would drive it)"
                      if preview.exists() else "")
                   + ". `dub models pull wav2lip_gan` (non-commercial research licence) and run again to lip-sync.")
