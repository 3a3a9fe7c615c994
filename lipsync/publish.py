"""What is published carries no path that leads outside it.

Stages write their JSON files with the local paths they worked with: the run's
staging folder, inputs fetched from object storage into a working folder, 16 kHz
working copies of the voices, lip-synced segments in the render cache.  Once the
run leaves, only the published folder (or prefix) is left, so before publication
:func:`make_portable` rewrites every JSON file under it:

* a path inside the output becomes relative to the file's output root
  (``shots/shot-0001/shot.json``), so it holds wherever the output is copied;
* a local input fetched from storage becomes the URI it was fetched from, and a
  voice's working copy the dub track it was made from (``replace``);
* a path inside a private folder (the run's working folder, the render cache) is
  not kept: it becomes ``null`` where it is a value, and its folder part is
  dropped where it is inside a sentence (a note keeps the file's name).

Paths of local inputs outside those folders (the film and dub tracks as the job
named them) are left as given: they are the job's own words.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["make_portable", "portable"]


def _under(p: str, folder: str) -> bool:
    return p == folder or p.startswith(folder.rstrip("/") + "/")


def portable(value: Any, root: str | os.PathLike[str], replace: Mapping[str, str] | None = None,
             private: Sequence[str | os.PathLike[str]] = ()) -> Any:
    """``value`` (JSON data) with its paths made portable (see the module docstring)."""
    root_s = str(Path(root).resolve())
    roots = {root_s, str(Path(root))}
    repl = sorted(((str(k), str(v)) for k, v in (replace or {}).items()), key=lambda kv: -len(kv[0]))
    priv = sorted({str(Path(p).resolve()) for p in private} | {str(Path(p)) for p in private}, key=len, reverse=True)

    def one(s: str) -> Any:
        for k, v in repl:
            if s == k:
                return v
        sentence = ": " in s  # a note: "PATH: what happened"
        for r in roots:
            if not sentence and _under(s, r):
                return Path(os.path.relpath(s, r)).as_posix() if s != r else "."
        for p in priv:
            if not sentence and _under(s, p):
                return None
        # inside a sentence: inputs by their source, output paths relative, private folders by file name only
        for k, v in repl:
            s = s.replace(k, v)
        for r in roots:
            s = s.replace(r.rstrip("/") + "/", "")
        for p in priv:
            s = re.sub(re.escape(p.rstrip("/")) + r"/(?:[^/:]*/)*", "", s)
        return s

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, str):
            return one(v)
        return v

    return walk(value)


def make_portable(root: str | os.PathLike[str], replace: Mapping[str, str] | None = None,
                  private: Sequence[str | os.PathLike[str]] = ()) -> list[Path]:
    """Rewrite every ``*.json`` under ``root`` in place (atomically, only when something changes)."""
    from dubcore.schema import atomic_path

    changed = []
    for path in sorted(Path(root).rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            continue
        new = portable(data, root, replace, private)
        if new == data:
            continue
        text = json.dumps(new, indent=2, ensure_ascii=False)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text + "\n", encoding="utf-8")
        changed.append(path)
    return changed
