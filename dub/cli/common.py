"""What the ``dub`` commands share: errors as one red line, progress bars, the model store, face tracking."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dubcore.manifest import ManifestError
from dubcore.schema import SchemaError

err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


#: ``dub -v``: set by the app's callback (:mod:`dub.cli`); read when a command runs.
_VERBOSE = False


def _where(exc: BaseException) -> str:
    """``"stage STAGE (INPUT): "`` when the flow said which stage failed on which input."""
    stage = getattr(exc, "dub_stage", None)
    if not stage:
        return ""
    where = getattr(exc, "dub_input", None)
    return f"{stage}{f' ({where})' if where else ''}: "


@contextmanager
def _errors(catch_all: bool = False) -> Iterator[None]:
    """Turn the library's clear errors into one red line and a non-zero exit, no traceback (``-v`` shows it).

    With ``catch_all`` any other exception is one line too (its type and message), exit 1."""
    from dubcore.storage import StorageError
    from lipsync.media.errors import MediaError

    try:
        yield
    except (MediaError, ManifestError, SchemaError, StorageError, FileNotFoundError, ValueError) as exc:
        if _VERBOSE:
            err.print_exception()
        _fail(_where(exc) + str(exc).strip())
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:
        if not catch_all or _VERBOSE:
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        _fail(f"{_where(exc)}{type(exc).__name__}: {first} (run `dub -v ...` for the traceback)", code=1)


class _NoTracebacks(logging.Filter):
    """Console only, without ``-v``: Prefect's run log (and any traceback) stays in the Prefect log (API),
    not on the operator's screen, which gets the result or one error line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "prefect" or record.name.startswith("prefect."):
            return False
        if record.exc_info:
            record.exc_info = None
            record.exc_text = None
        return "Traceback (most recent call last)" not in record.getMessage()


def _quiet_console() -> None:
    from prefect.logging.handlers import APILogHandler

    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if not isinstance(handler, APILogHandler) and not any(isinstance(f, _NoTracebacks) for f in handler.filters):
                handler.addFilter(_NoTracebacks())


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


@contextmanager
def _store_errors() -> Iterator[None]:
    from lipsync.store import StoreError

    with _errors():
        try:
            yield
        except StoreError as exc:
            _fail(str(exc))


@contextmanager
def _model_store_env(store: Optional[Path]) -> Iterator[None]:
    """``--store`` for code that reads the store from ``$DUB_MODEL_STORE`` (restored afterwards)."""
    if store is None:
        yield
        return
    before = os.environ.get("DUB_MODEL_STORE")
    os.environ["DUB_MODEL_STORE"] = str(store)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("DUB_MODEL_STORE", None)
        else:
            os.environ["DUB_MODEL_STORE"] = before


def model_path(name_or_path: str, store: Optional[Path]) -> Path:
    from lipsync import store as model_store

    return model_store.resolve(name_or_path, store)


def _track_faces(video, shot_list, info, weights, store, device):  # type: ignore[no-untyped-def]
    from lipsync.faces.detect import build_detector
    from lipsync.faces.pipeline import track_film_faces

    detector = build_detector(weights, device=device, store=store)  # the entry's family picks the detector
    return [t for r in track_film_faces(video, shot_list, detector, info=info) for t in r.tracks]
