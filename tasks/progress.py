"""Progress of long stages: logged by the task, and shown as a bar by the CLI when it runs the flow in-process."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Callable, Protocol


class ProgressSink(Protocol):
    def __call__(self, stage: str, done: int, total: int) -> None: ...


#: Set by ``dub run`` to draw progress bars; tasks run in the same process with the local engine.
_SINKS: list[ProgressSink] = []
_last_logged: ContextVar[dict[str, int] | None] = ContextVar("_last_logged", default=None)


def add_sink(sink: ProgressSink) -> None:
    _SINKS.append(sink)


def remove_sink(sink: ProgressSink) -> None:
    if sink in _SINKS:
        _SINKS.remove(sink)


def reporter(stage: str, logger: logging.Logger | logging.LoggerAdapter) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback that logs every 10% and feeds any registered bar."""
    state = {"pct": -10}

    def progress(done: int, total: int) -> None:
        for sink in list(_SINKS):
            sink(stage, done, total)
        pct = int(100 * done / total) if total else 100
        if pct >= state["pct"] + 10 or done == total:
            state["pct"] = pct - pct % 10
            logger.info("%s: %d/%d (%d%%)", stage, done, total, pct)

    return progress
