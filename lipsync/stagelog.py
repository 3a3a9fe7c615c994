"""Time the stages of a job and say which one failed, on what.

>>> stages = StageLog()
>>> with stages("faces", "faces", film):        # doctest: +SKIP
...     ...

Each block's wall time lands in ``stages.timings[key]`` (the report's
``timings_seconds``) when it succeeds; an exception leaving it is tagged with
``dub_stage`` (the stage's name) and ``dub_input`` (what it was working on), unless
an inner stage tagged it first, so ``dub run`` prints one line naming the stage,
the input and the fix.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator


class StageLog:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.current: tuple[str, str] | None = None

    @contextmanager
    def __call__(self, key: str, name: str | None = None, what: Any = None) -> Iterator[None]:
        previous = self.current
        self.current = (name or key, "" if what is None else str(what))
        t0 = time.perf_counter()
        try:
            yield
        except Exception as exc:
            tag(exc, *self.current)
            raise
        finally:
            self.current = previous
        self.timings[key] = time.perf_counter() - t0


def tag(exc: BaseException, stage: str, what: str) -> None:
    """Name the stage and input on ``exc`` unless it already names them."""
    if getattr(exc, "dub_stage", None):
        return
    try:
        exc.dub_stage, exc.dub_input = stage, what  # type: ignore[attr-defined]
    except AttributeError:  # an exception type that takes no attributes
        pass
