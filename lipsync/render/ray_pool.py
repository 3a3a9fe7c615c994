"""The Ray backend of the shot pools: one actor per GPU (or CPU worker), each holding one shot worker.

See :mod:`lipsync.render.pool` for where Ray runs and how many workers start.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .pool import (
    ADDRESS_ENV, OnResult, PoolError, ShotJobError, WorkerInfo, WorkerStartError, _task_error_text, pick_device,
    resolve_address,
)

log = logging.getLogger("lipsync.render.pool")


# --------------------------------------------------------------------------- the Ray actor


class _WorkerHost:
    """The body of each Ray actor: builds the shot worker once, then runs jobs on it."""

    def __init__(self, index: int, worker_cls: type, worker_kwargs: dict[str, Any]):
        import ray

        ctx = ray.get_runtime_context()
        gpu_ids = tuple(str(g) for g in ctx.get_accelerator_ids().get("GPU", []))
        device = worker_kwargs.get("device") or pick_device(gpu_ids)
        if gpu_ids and device == "cpu":
            logging.getLogger(__name__).warning(
                "worker %d was given GPU %s but torch sees no CUDA device; running on CPU", index, ",".join(gpu_ids)
            )
        self.info = WorkerInfo(
            index=index,
            pid=os.getpid(),
            hostname=socket.gethostname(),
            node_ip=ray.util.get_node_ip_address(),
            node_id=ctx.get_node_id(),
            gpu_ids=gpu_ids,
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
            device=device,
        )
        self.worker: Any = None
        self.start_error: WorkerStartError | None = None
        try:
            self.worker = worker_cls(**{**worker_kwargs, "device": device})
        except Exception as e:
            # Kept and raised by ready(): an exception escaping an actor's __init__ reaches the
            # driver only as a long "actor died" text, without the exception object.
            err = WorkerStartError(
                f"{worker_cls.__qualname__} failed to load on {self.info.describe()}: {type(e).__name__}: {e}"
            )
            err.__cause__ = e
            self.start_error = err

    def ready(self) -> WorkerInfo:
        if self.start_error is not None:
            raise self.start_error
        return self.info

    def run(self, job: Any) -> Any:
        if self.start_error is not None:
            raise self.start_error
        return self.worker.run(job)


# --------------------------------------------------------------------------- the Ray pool


class WorkerPool:
    """A pool of Ray actors, each holding one shot worker (one model) for its whole life.

    >>> with WorkerPool(Wav2LipWorker, {"checkpoint": "wav2lip_gan"}) as pool:   # doctest: +SKIP
    ...     for result in pool.map(shot_jobs, on_result=progress):
    ...         ...

    ``map`` may be called several times on one pool (the models stay loaded), but
    not concurrently.  The actors are killed when the pool closes; Ray is shut
    down then only if this pool started it.
    """

    backend = "ray"

    def __init__(
        self,
        worker_cls: type,
        worker_kwargs: Mapping[str, Any] | None = None,
        *,
        address: str | None = None,
        num_workers: int | None = None,
        gpus_per_worker: float = 1.0,
        cpus_per_worker: float = 1.0,
        runtime_env: dict[str, Any] | None = None,
        start_timeout_s: float | None = 900.0,
    ):
        if num_workers is not None and num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        if gpus_per_worker <= 0:
            raise ValueError(f"gpus_per_worker must be positive, got {gpus_per_worker}")
        if cpus_per_worker < 0:
            raise ValueError(f"cpus_per_worker must not be negative, got {cpus_per_worker}")
        self.worker_cls = worker_cls
        self.worker_kwargs = dict(worker_kwargs or {})
        self.address = resolve_address(address)
        self.num_workers = num_workers
        self.gpus_per_worker = float(gpus_per_worker)
        self.cpus_per_worker = float(cpus_per_worker)
        self.runtime_env = runtime_env
        self.start_timeout_s = start_timeout_s
        self.workers: list[WorkerInfo] = []
        self._actors: list[Any] = []
        self._started_ray = False
        self._open = False

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self._open:
            return
        import ray

        self._started_ray = _ensure_ray(self.address)
        try:
            self._start_actors(ray)
        except BaseException:
            self.close()
            raise
        self._open = True
        log.info("worker pool: %s", "; ".join(w.describe() for w in self.workers))

    def _plan(self, ray: Any) -> tuple[int, float]:
        """(number of workers, GPUs per worker) from what the cluster reports."""
        total_gpus = float(ray.cluster_resources().get("GPU", 0.0))
        if total_gpus > 0:
            n = int(math.floor(total_gpus / self.gpus_per_worker + 1e-9))
            if n < 1:
                raise WorkerStartError(
                    f"each worker asks for {self.gpus_per_worker:g} GPUs but the Ray cluster has {total_gpus:g}"
                )
            if self.num_workers is not None:
                n = min(n, self.num_workers)
            return n, self.gpus_per_worker
        return self.num_workers or 1, 0.0

    def _start_actors(self, ray: Any) -> None:
        n, gpus = self._plan(ray)
        options: dict[str, Any] = {"num_cpus": self.cpus_per_worker, "num_gpus": gpus, "max_concurrency": 1}
        if self.runtime_env:
            options["runtime_env"] = self.runtime_env
        actor_cls = ray.remote(_WorkerHost).options(**options)
        kwargs = dict(self.worker_kwargs)
        self._actors = [actor_cls.remote(i, self.worker_cls, kwargs) for i in range(n)]
        refs = [a.ready.remote() for a in self._actors]
        ready, pending = ray.wait(refs, num_returns=len(refs), timeout=self.start_timeout_s)
        if pending:
            raise WorkerStartError(
                f"only {len(ready)} of {n} workers started within {self.start_timeout_s:g} s "
                f"(each asks for {self.cpus_per_worker:g} CPU and {gpus:g} GPU; "
                f"cluster has {dict(ray.cluster_resources())}, free {dict(ray.available_resources())})"
            )
        infos: list[WorkerInfo] = []
        for i, ref in enumerate(refs):
            try:
                infos.append(ray.get(ref))
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                if isinstance(cause, WorkerStartError):
                    raise WorkerStartError(str(cause)) from e
                raise WorkerStartError(
                    f"worker {i} of {self.worker_cls.__qualname__} failed to start: {_task_error_text(e, cause)}"
                ) from e
            except ray.exceptions.RayError as e:  # the actor process died (import error, crash, OOM)
                raise WorkerStartError(f"worker {i} of {self.worker_cls.__qualname__} failed to start: {e}") from e
        self.workers = infos
        self._free = deque(range(len(self._actors)))
        self._free_cond = threading.Condition()

    def close(self) -> None:
        try:
            if self._actors:
                import ray

                for actor in self._actors:
                    try:
                        ray.kill(actor)
                    except Exception:  # already dead, or Ray gone
                        pass
        finally:
            self._actors = []
            self._open = False
            if self._started_ray:
                import ray

                self._started_ray = False
                ray.shutdown()

    # ------------------------------------------------------------ work

    def run_one(self, job: Any) -> Any:
        """Run one job on the next free worker and return its result.

        Safe to call from several threads at once (one caller per worker runs, the
        others wait for a free worker): per-shot Prefect tasks share one pool this way.
        Do not mix with a ``map`` running at the same time."""
        import ray

        if not self._open:
            raise PoolError("the pool is not started: use it as a context manager (with WorkerPool(...) as pool)")
        with self._free_cond:
            while not self._free:
                self._free_cond.wait()
            w = self._free.popleft()
        try:
            try:
                return ray.get(self._actors[w].run.remote(job))
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                raise ShotJobError(0, job, self.workers[w], cause, detail=_task_error_text(e, cause)) from e
            except ray.exceptions.RayError as e:
                raise ShotJobError(0, job, self.workers[w], e, detail=f"worker lost: {e}") from e
        finally:
            with self._free_cond:
                self._free.append(w)
                self._free_cond.notify()

    def map(self, jobs: Iterable[Any], on_result: OnResult | None = None) -> Iterator[Any]:
        """Run every job on the workers; yield the results in job order.

        Each free worker takes the next job as soon as it is done with its last one.
        ``on_result(index, result)`` is called in this process as each job finishes
        (in completion order).  The first failure is raised as ``ShotJobError`` naming
        the job's index and the worker's node and GPU; jobs still running then are
        abandoned (their results are discarded).  ``jobs`` may be a lazy iterable.
        """
        if not self._open:
            raise PoolError("the pool is not started: use it as a context manager (with WorkerPool(...) as pool)")
        return self._map(iter(jobs), on_result)

    def _map(self, jobs: Iterator[Any], on_result: OnResult | None) -> Iterator[Any]:
        import ray

        idle: deque[int] = deque(range(len(self._actors)))
        running: dict[Any, tuple[int, Any, int]] = {}  # ref -> (job index, job, worker index)
        done: dict[int, Any] = {}
        submitted = 0
        next_out = 0
        exhausted = False
        while True:
            while idle and not exhausted:
                try:
                    job = next(jobs)
                except StopIteration:
                    exhausted = True
                    break
                w = idle.popleft()
                running[self._actors[w].run.remote(job)] = (submitted, job, w)
                submitted += 1
            if not running:
                break
            ready, _ = ray.wait(list(running), num_returns=1)
            ref = ready[0]
            index, job, w = running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                raise ShotJobError(index, job, self.workers[w], cause, detail=_task_error_text(e, cause)) from e
            except ray.exceptions.RayError as e:  # the worker died (crash, OOM, node lost)
                raise ShotJobError(index, job, self.workers[w], e, detail=f"worker lost: {e}") from e
            idle.append(w)
            if on_result is not None:
                on_result(index, result)
            done[index] = result
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1
        while next_out in done:  # pragma: no cover - everything was yielded above
            yield done.pop(next_out)
            next_out += 1


# --------------------------------------------------------------------------- Ray start-up


def _ensure_ray(address: str | None) -> bool:
    """Initialise Ray unless it already is; True if this call started (or connected) it."""
    import ray

    if ray.is_initialized():
        return False
    t0 = time.monotonic()
    if address is None:
        # "local" always starts a new Ray here, even if RAY_ADDRESS is set or a `ray start`
        # cluster runs on this machine (connect to those with address="auto").
        ray.init(
            address="local",
            num_cpus=os.cpu_count() or 1,
            include_dashboard=False,
            logging_level=logging.WARNING,
            ignore_reinit_error=True,
        )
        log.info("started a local Ray in %.1f s: %s", time.monotonic() - t0, dict(ray.cluster_resources()))
    else:
        try:
            ray.init(address=address, logging_level=logging.WARNING, ignore_reinit_error=True)
        except ConnectionError as e:
            raise PoolError(
                f"cannot connect to the Ray cluster at {address!r} (from the argument or ${ADDRESS_ENV}): {e}. "
                "Start one with `ray start --head`, or unset the address to run a local Ray"
            ) from e
        log.info("connected to Ray at %s in %.1f s: %s", address, time.monotonic() - t0, dict(ray.cluster_resources()))
    return True
