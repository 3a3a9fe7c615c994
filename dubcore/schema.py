"""Versioned JSON files, written atomically.

Every JSON file dub-film writes carries ``"schema": "dub-film/<kind>@<version>"``
as its first key.  Readers check the kind and refuse a newer major version with a
message that says which file and what to do.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

SCHEMA_PREFIX = "dub-film/"

#: Current version of every file kind this project writes.
VERSIONS: dict[str, int] = {
    "probe": 1,
    "shots": 1,
    "faces": 1,
    "report": 1,
    "manifest": 1,
    "speakers": 1,
    "asd": 1,
    "qc": 1,
    "models": 1,
    "success": 1,
    "dataset": 1,
    "training": 1,
}


class SchemaError(ValueError):
    """A JSON file is not the kind or version expected."""


def schema_tag(kind: str) -> str:
    return f"{SCHEMA_PREFIX}{kind}@{VERSIONS[kind]}"


def parse_schema_tag(tag: str) -> tuple[str, int]:
    if not isinstance(tag, str) or not tag.startswith(SCHEMA_PREFIX) or "@" not in tag:
        raise SchemaError(f"not a dub-film schema tag: {tag!r}")
    kind, _, version = tag[len(SCHEMA_PREFIX) :].partition("@")
    return kind, int(version)


def versioned(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with the schema tag of ``kind`` as its first key."""
    return {"schema": schema_tag(kind), **{k: v for k, v in payload.items() if k != "schema"}}


def check_versioned(data: Any, kind: str, where: str) -> dict[str, Any]:
    if not isinstance(data, dict) or "schema" not in data:
        raise SchemaError(f"{where}: no 'schema' field; expected a dub-film {kind} file ({schema_tag(kind)})")
    got_kind, got_version = parse_schema_tag(data["schema"])
    if got_kind != kind:
        raise SchemaError(f"{where}: is a {got_kind!r} file, expected {kind!r}")
    if got_version > VERSIONS[kind]:
        raise SchemaError(
            f"{where}: schema {data['schema']} is newer than this dub-film understands "
            f"({schema_tag(kind)}); upgrade dub-film"
        )
    return data


@contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only on success.

    The temporary keeps the final extension (ffmpeg picks the container from it).
    On any error the temporary is removed and ``path`` is left as it was.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    ext = suffix if suffix is not None else "".join(final.suffixes[-1:])
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".partial{ext}", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; published files get normal modes
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike[str], kind: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as a versioned ``kind`` file, atomically."""
    data = versioned(kind, payload)
    try:  # names as the studio sent them (Japanese, accents) stay readable in the file
        text = json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError:  # a path with undecodable bytes (lone surrogates): escape everything
        text = json.dumps(data, indent=2, sort_keys=False, ensure_ascii=True)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def read_json(path: str | os.PathLike[str], kind: str) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{p}: not valid JSON ({exc})") from exc
    return check_versioned(data, kind, str(p))
