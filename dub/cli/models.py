"""``dub models list | pull | verify``: the model store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .common import _fail, _store_errors


models_app = typer.Typer(help="The model store: list, pull and verify checkpoints.", no_args_is_help=True)


@models_app.command("list")
def models_list(
    store: Optional[Path] = typer.Option(None, help="Model store folder (default $DUB_MODEL_STORE or ~/.cache/dub-film/models)."),
    as_json: bool = typer.Option(False, "--json", help="Print versioned JSON instead of a table."),
) -> None:
    """Every known checkpoint, its license, and whether it is in the store."""
    from dubcore.schema import versioned
    from lipsync import store as model_store

    rows = []
    for entry in model_store.list_entries():
        path = model_store.path_for(entry, store)
        rows.append({
            "name": entry.name,
            "family": entry.family,
            "default": model_store.DEFAULTS.get(entry.family) == entry.name,
            "license": entry.license,
            "size": entry.size,
            "sha256": entry.sha256,
            "present": path.is_file(),
            "path": str(path),
        })
    if as_json:
        typer.echo(json.dumps(versioned("models", {"models": rows}), indent=2))
        return
    for r in rows:
        mark = "*" if r["default"] else " "
        typer.echo(f"{mark} {r['name']:<28} {r['family']:<11} {'present' if r['present'] else 'missing':<8} {r['license']}")


@models_app.command("pull")
def models_pull(
    names: list[str] = typer.Argument(..., help="Entry names (see `dub models list`)."),
    store: Optional[Path] = typer.Option(None, help="Model store folder."),
    source: Optional[str] = typer.Option(None, help="Copy from this local file or URL instead of the entry's URL."),
    allow_unverified: bool = typer.Option(False, help="Accept an entry with no published sha256 (hash recorded on first pull)."),
    force: bool = typer.Option(False, help="Fetch again even if present and verified."),
) -> None:
    """Download (or copy) checkpoints into the store, verifying size and sha256."""
    from lipsync import store as model_store

    if source and len(names) != 1:
        _fail("--source takes exactly one entry name")
    with _store_errors():
        for name in names:
            path = model_store.pull(name, store, source=source, allow_unverified=allow_unverified, force=force)
            typer.echo(f"{name}: {path}")


@models_app.command("verify")
def models_verify(
    names: Optional[list[str]] = typer.Argument(None, help="Entry names; default: every entry present in the store."),
    store: Optional[Path] = typer.Option(None, help="Model store folder."),
) -> None:
    """Re-hash checkpoints in the store against their recorded sha256."""
    from lipsync import store as model_store

    with _store_errors():
        if not names:
            names = [e.name for e in model_store.list_entries() if model_store.path_for(e, store).is_file()]
        for name in names:
            typer.echo(f"{name}: ok ({model_store.verify(name, store)})")
