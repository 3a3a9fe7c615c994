"""Static check: no undefined name anywhere in the project's code (pyflakes).

An undefined name is a crash waiting for the one code path that reaches it; the
tests of the other paths cannot see it.  Unused imports and similar style
findings are not checked here.
"""

from __future__ import annotations

from pathlib import Path

from pyflakes import api, messages
from pyflakes.reporter import Reporter

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dubcore", "lipsync", "tasks", "flows", "dub", "bench", "tests")
FATAL = (messages.UndefinedName, messages.UndefinedLocal, messages.UndefinedExport, messages.ImportStarUsed)


class _Collect(Reporter):
    def __init__(self) -> None:
        self.found: list[str] = []

    def flake(self, message) -> None:  # type: ignore[no-untyped-def]
        if isinstance(message, FATAL):
            self.found.append(str(message))

    def syntaxError(self, filename, msg, lineno, offset, text) -> None:  # type: ignore[no-untyped-def]
        self.found.append(f"{filename}:{lineno}: syntax error: {msg}")

    def unexpectedError(self, filename, msg) -> None:  # type: ignore[no-untyped-def]
        self.found.append(f"{filename}: {msg}")


def test_no_undefined_names():
    files = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
    assert len(files) > 40
    reporter = _Collect()
    for path in files:
        api.checkPath(str(path), reporter)
    assert not reporter.found, "\n".join(reporter.found)
