"""``dub``: one subcommand per stage, each usable alone on a file; a thin layer over the library.

Every file written is versioned JSON (a ``schema`` field) or a standard format
(EDL, OTIO, RTTM, SRT), and appears only when complete.

This package creates the Typer :data:`app` and registers the commands of its
modules, one module per stage: :mod:`.media` (probe, shots), :mod:`.faces`,
:mod:`.speakers` (asd, diarize, match, preview), :mod:`.lipsync`, :mod:`.qc`,
:mod:`.jobs` (run, demo) and the groups :mod:`.models` and :mod:`dub.train`;
:mod:`.common` holds what they share (one-line errors, progress bars).
"""

from __future__ import annotations

import logging

import typer

from ..train import train_app
from . import common, faces, jobs, lipsync, media, qc, speakers
from .common import (  # noqa: F401 - importable from dub.cli, as before the split (dub.train_dataset uses them)
    _bar,
    _errors,
    _fail,
    _model_store_env,
    _NoTracebacks,
    _quiet_console,
    _store_errors,
    _track_faces,
    _where,
    err,
    model_path,
)
from .jobs import _run_flow  # noqa: F401
from .models import models_app

app = typer.Typer(
    name="dub",
    help="dub-film: make the actors on screen speak the dubbed language.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress and decisions; show tracebacks.")) -> None:
    common._VERBOSE = verbose
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


# The commands, in the order `dub --help` lists them.
for _command in (media.probe, media.shots, jobs.run, faces.faces, speakers.asd, lipsync.lipsync, speakers.diarize,
                 speakers.match, speakers.preview, qc.qc, jobs.demo):
    app.command()(_command)
app.add_typer(models_app, name="models")
app.add_typer(train_app, name="train")


def main() -> None:  # pragma: no cover - console script entry
    app()
