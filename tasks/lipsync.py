"""Lip-sync, per shot.  Until the lip-sync engine lands, every shot passes through unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from dubcore.records import Shot
from dubcore.schema import write_json


@task(name="lipsync-shot", task_run_name="lipsync {shot.id} @ {shot.start_timecode}", cache_policy=NO_CACHE)
def lipsync_shot_task(shot: Shot, film: Path, shot_dir: Path) -> dict[str, Any]:
    """Render one shot.  Today: no segment is written and the assembler takes the
    shot's frames from the source untouched (frame-identical before the final encode)."""
    logger = get_run_logger()
    render = {"status": "unchanged", "reason": "lip-sync stage not enabled yet: frames passed through", "segment": None}
    write_json(shot_dir / "shot.json", "report", {"shot": shot.to_dict(), "render": render})
    logger.info("%s [%d, %d): %s", shot.id, shot.frames.start, shot.frames.end, render["reason"])
    return render
