"""Count the child processes a piece of work launches (ffmpeg, ffprobe, ...): for benchmarks and tests.

>>> with record_launches() as launched:          # doctest: +SKIP
...     assemble(...)
>>> launched.count("ffprobe"), launched.decoding("film.mp4")

Every launch goes through :class:`subprocess.Popen` (``subprocess.run`` included);
this patches it for the duration of the block, in this process only.
"""

from __future__ import annotations

import subprocess
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator


@dataclass
class Launches:
    commands: list[list[str]] = field(default_factory=list)

    def tools(self) -> list[str]:
        return [Path(c[0]).name for c in self.commands]

    def count(self, tool: str | None = None) -> int:
        return len(self.commands) if tool is None else sum(1 for t in self.tools() if t == tool)

    def reading(self, path: str | Path) -> list[list[str]]:
        """The ffmpeg commands that take ``path`` as an input (``-i path``)."""
        p = str(path)
        return [c for c in self.commands if Path(c[0]).name == "ffmpeg"
                and any(a == "-i" and (b == p or b.endswith(p) or b == "file:" + p) for a, b in zip(c, c[1:]))]

    def decoding(self, path: str | Path) -> list[list[str]]:
        """The ffmpeg commands that decode ``path``'s picture (read it and do not only stream-copy it)."""
        return [c for c in self.reading(path) if not _copies_picture(c)]

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for t in self.tools():
            counts[t] = counts.get(t, 0) + 1
        return ", ".join(f"{n} {t}" for t, n in sorted(counts.items())) or "none"


def _copies_picture(cmd: list[str]) -> bool:
    return any(a in ("-c:v", "-vcodec", "-codec:v") and b == "copy" for a, b in zip(cmd, cmd[1:]))


_LOCK = threading.Lock()


@contextmanager
def record_launches() -> Iterator[Launches]:
    """Record every child process started in this process inside the block."""
    record = Launches()
    original = subprocess.Popen.__init__

    def patched(self, args, *a, **kw):  # type: ignore[no-untyped-def]
        cmd = [str(x) for x in (args if isinstance(args, (list, tuple)) else [args])]
        with _LOCK:
            record.commands.append(cmd)
        return original(self, args, *a, **kw)

    subprocess.Popen.__init__ = patched  # type: ignore[method-assign]
    try:
        yield record
    finally:
        subprocess.Popen.__init__ = original  # type: ignore[method-assign]
