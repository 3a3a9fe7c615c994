"""Lip-sync: every shot with faces rendered by Wav2Lip workers (Ray: one per GPU), or passed through."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from dubcore.manifest import JobOptions
from dubcore.records import Shot
from dubcore.schema import write_json
from lipsync.render.cache import SegmentCache, default_cache_dir, shot_key
from lipsync.render.pool import ShotJobError, make_pool
from lipsync.render.params import LipSyncOutOfMemoryError, LipSyncParams
from lipsync.render import LipSyncWorker, ShotJob, render_summary
from lipsync.store import resolve

from .progress import reporter


def write_shot_json(shots_dir: Path, shot: Shot, render: dict[str, Any]) -> Path:
    """``shots/<shot id>/shot.json``: the shot and what the lip-sync stage did with it."""
    return write_json(shots_dir / shot.id / "shot.json", "report", {"shot": shot.to_dict(), "render": render})


def passthrough(shot: Shot, shot_dir: Path, reason: str) -> dict[str, Any]:
    render = {"status": "unchanged", "reason": reason, "segment": None}
    write_shot_json(shot_dir.parent, shot, render)
    return render


@task(name="lipsync-passthrough", task_run_name="passthrough {shot.id} @ {shot.start_timecode}", cache_policy=NO_CACHE)
def passthrough_task(shot: Shot, shot_dir: Path, reason: str) -> dict[str, Any]:
    """A shot left as it is: no segment, the assembler takes its frames from the source."""
    get_run_logger().info("%s [%d, %d): %s", shot.id, shot.frames.start, shot.frames.end, reason)
    return passthrough(shot, shot_dir, reason)


class _LazyPool:
    """A worker pool started at the first shot that needs rendering (a fully cached run loads no model)."""

    def __init__(self, options: JobOptions, checkpoint: str) -> None:
        self.kwargs: dict[str, Any] = {"checkpoint": checkpoint, "params": LipSyncParams(batch_size=options.lipsync_batch_size)}
        if options.lipsync_generator != "auto":
            self.kwargs["generator"] = options.lipsync_generator
        if options.lipsync_device != "auto":
            self.kwargs["device"] = options.lipsync_device
        self.backend = options.lipsync_backend
        self._pool: Any = None
        self._lock = threading.Lock()

    def run_one(self, job: ShotJob) -> Any:
        with self._lock:
            if self._pool is None:
                pool = make_pool(LipSyncWorker, self.kwargs, backend=self.backend)
                pool.start()
                self._pool = pool
        return self._pool.run_one(job)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


#: Pools of the running flows, by id: per-shot tasks find theirs here (a pool is not a task parameter).
_POOLS: dict[str, _LazyPool] = {}


def _transient(task, run, state) -> bool:  # type: ignore[no-untyped-def]
    """Retry a shot whose worker died or ran out of memory (the engine already halves its batch on OOM)."""
    try:
        state.result()
    except LipSyncOutOfMemoryError:
        return True
    except ShotJobError as exc:
        return "worker lost" in str(exc) or isinstance(exc.__cause__, LipSyncOutOfMemoryError)
    except Exception:
        return False
    return False


@task(
    name="lipsync-shot",
    task_run_name="lipsync {shot.id} @ {shot.start_timecode}",
    cache_key_fn=lambda context, parameters: parameters["key"],
    persist_result=True,
    result_serializer="json",
    retries=1,
    retry_delay_seconds=10,
    retry_condition_fn=_transient,
)
def render_shot_task(job: ShotJob, shot: Shot, key: str, cache_root: Path, pool_id: str) -> dict[str, Any]:
    """Render one shot on the flow's worker pool and store it in the render cache under ``key``.

    Cached on ``key`` (the content of the shot's inputs, parameters and weights): a new
    run of the same job shows this task as Cached and takes the segment from the cache."""
    cache = SegmentCache(cache_root)
    hit = cache.get(key)
    if hit is not None:  # rendered by an earlier run whose task record is gone (other Prefect home)
        get_run_logger().info("%s: taken from the render cache", shot.id)
        return hit
    render = _POOLS[pool_id].run_one(job)
    return cache.put(key, render.segment, render_summary(render))


def lipsync_shots(jobs: list[ShotJob], shots: dict[str, Shot], options: JobOptions, shots_dir: Path) -> dict[str, dict[str, Any]]:
    """Render every job, one Prefect task per shot sharing one worker pool (model loaded once per worker).

    Shots already in the render cache (``options.cache``) are not rendered again: their
    task is Cached and their segment is copied from the cache.  Returns per-shot summaries."""
    logger = get_run_logger()
    if not jobs:
        return {}
    checkpoint = str(resolve(options.lipsync_checkpoint))  # type: ignore[arg-type]
    cache_root = Path(options.cache_dir).expanduser() if options.cache_dir else default_cache_dir()
    cache_root.mkdir(parents=True, exist_ok=True)
    params = LipSyncParams(batch_size=options.lipsync_batch_size)
    pool = _LazyPool(options, checkpoint)
    pool_id = uuid.uuid4().hex
    _POOLS[pool_id] = pool
    log_progress = reporter("lipsync", logger)
    artifact = create_progress_artifact(0.0, key="dub-film-lipsync-progress", description=f"Lip-sync of {len(jobs)} shot(s)")

    def progress(done: int, total: int) -> None:
        log_progress(done, total)
        if artifact is not None:
            update_progress_artifact(artifact, 100.0 * done / max(1, total))

    summaries: dict[str, dict[str, Any]] = {}
    storage = cache_root / "prefect-results"  # task records of the cache, beside the segments
    try:
        futures = []
        for job in jobs:
            key = shot_key(job, checkpoint, params, memo_dir=cache_root, generator=options.lipsync_generator)
            if not options.cache:
                key = f"{key}-{uuid.uuid4().hex}"  # a fresh render, never reused
            fresh = SegmentCache(cache_root).get(key) is None
            shot_task = render_shot_task.with_options(refresh_cache=fresh, result_storage=storage)
            futures.append((job, key, shot_task.submit(job, shots[job.shot_id], key, cache_root, pool_id)))
        for job, key, future in futures:
            cached = future.result()
            out = Path(job.out)
            if options.cache:  # one copy of the segment: the cache's (this render's own file is not kept)
                segment = Path(cached["segment"])
                if out.exists() and out.resolve() != segment.resolve():
                    out.unlink()
            else:  # a render not to be reused: moved out of the cache to the run's working folder
                segment = out
                if Path(cached["segment"]).resolve() != out.resolve():
                    SegmentCache(cache_root).take(key, out)
            summary = {**cached, "segment": str(segment), "cache_key": key}
            summaries[job.shot_id] = summary
            write_shot_json(shots_dir, shots[job.shot_id], summary)
            logger.info("%s rendered: %s", job.shot_id, {t["id"]: t["synthesized"] for t in summary.get("tracks", [])})
            progress(len(summaries), len(jobs))
    finally:
        _POOLS.pop(pool_id, None)
        pool.close()
    return summaries
