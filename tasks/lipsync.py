"""Lip-sync: every shot with faces rendered by Wav2Lip workers (Ray: one per GPU), or passed through."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from dubcore.manifest import JobOptions
from dubcore.records import Shot
from dubcore.schema import write_json
from lipsync.distributed import make_pool
from lipsync.inference import LipSyncParams
from lipsync.render import LipSyncWorker, ShotJob, render_summary
from lipsync.store import resolve

from .progress import reporter


def passthrough(shot: Shot, shot_dir: Path, reason: str) -> dict[str, Any]:
    render = {"status": "unchanged", "reason": reason, "segment": None}
    write_json(shot_dir / "shot.json", "report", {"shot": shot.to_dict(), "render": render})
    return render


@task(name="lipsync-passthrough", task_run_name="passthrough {shot.id} @ {shot.start_timecode}", cache_policy=NO_CACHE)
def passthrough_task(shot: Shot, shot_dir: Path, reason: str) -> dict[str, Any]:
    """A shot left as it is: no segment, the assembler takes its frames from the source."""
    get_run_logger().info("%s [%d, %d): %s", shot.id, shot.frames.start, shot.frames.end, reason)
    return passthrough(shot, shot_dir, reason)


@task(name="lipsync-shots", cache_policy=NO_CACHE)
def lipsync_shots_task(jobs: list[ShotJob], shots: dict[str, Shot], options: JobOptions, shots_dir: Path) -> dict[str, dict[str, Any]]:
    """Render every job on a pool of workers (model loaded once per worker); returns per-shot summaries."""
    logger = get_run_logger()
    if not jobs:
        return {}
    checkpoint = str(resolve(options.lipsync_checkpoint))  # type: ignore[arg-type]
    kwargs = {"checkpoint": checkpoint, "params": LipSyncParams(batch_size=options.lipsync_batch_size)}
    if options.lipsync_device != "auto":
        kwargs["device"] = options.lipsync_device
    progress = reporter("lipsync", logger)
    summaries: dict[str, dict[str, Any]] = {}

    def done(index: int, render: Any) -> None:
        job = jobs[index]
        summaries[job.shot_id] = render_summary(render)
        write_json(shots_dir / job.shot_id / "shot.json", "report", {"shot": shots[job.shot_id].to_dict(), "render": summaries[job.shot_id]})
        logger.info("%s rendered: %s", job.shot_id, {t.track_id: t.synthesized for t in render.tracks})
        progress(len(summaries), len(jobs))

    with make_pool(LipSyncWorker, kwargs, backend=options.lipsync_backend) as pool:
        for _ in pool.map(jobs, on_result=done):
            pass
    return summaries
