"""Per-shot work on a pool of long-lived workers: Ray actors, one per GPU, or in-process.

A *shot worker* is a plain class that loads its model once in ``__init__`` and then
runs any number of jobs (one shot each) with ``run(job)``.  A pool starts a fixed
set of such workers and hands them the jobs of a film, a free worker taking the
next job (dynamic load balancing: a long shot does not hold up the others), and
gives the results back in job order.

Why Ray **actors** and not Ray tasks: an actor is one long-lived worker process
that keeps its state, so the model is loaded exactly once per worker and reused for
every shot it is given.  A Ray task that requests GPUs defaults to ``max_calls=1``:
its worker process exits after each call to free the GPU memory, so a task-based
pool would reload the model for every shot.  Each GPU actor requests
``num_gpus=gpus_per_worker``; Ray then sets ``CUDA_VISIBLE_DEVICES`` in the actor's
process to the GPU(s) it was given, so the worker just uses device ``"cuda"``.

Where Ray runs:

* ``address=None`` (and no ``DUB_RAY_ADDRESS``): a local Ray is started on this
  machine (no dashboard, one CPU slot per core, quiet logging) and shut down when
  the pool closes; Ray finds the machine's GPUs itself.
* ``address="auto"`` (a cluster started on this node with ``ray start``) or
  ``"ray://HEAD:10001"`` (Ray Client), or the same in the environment variable
  ``DUB_RAY_ADDRESS``: the pool connects to that cluster and leaves it running.
* If Ray is already initialised in this process (``ray.init`` called by the
  caller), the pool uses it as it is and does not shut it down.

Number of workers: one per ``gpus_per_worker`` GPUs that the Ray cluster reports
(capped by ``num_workers`` when given); with no GPU in the cluster, ``num_workers``
CPU workers (default 1), each on ``cpus_per_worker`` CPUs.

``LocalPool`` has the same interface and runs one worker in this process, without
Ray; ``make_pool`` picks a backend ("auto": Ray when importable, else local).

Nothing here imports Prefect, and Ray is imported only when a Ray pool is used.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)

ADDRESS_ENV = "DUB_RAY_ADDRESS"
"""Environment variable naming the Ray cluster to use ("auto", "ray://head:10001", "HOST:6379")."""

OnResult = Callable[[int, Any], None]


# --------------------------------------------------------------------------- protocol


@runtime_checkable
class ShotWorker(Protocol):
    """What a pool runs: a class constructed with keyword settings, one instance per worker.

    ``__init__(**settings)`` loads the model (e.g. ``checkpoint=...``) on ``device``
    (``"cuda"`` or ``"cpu"``, passed by the pool unless the caller fixed it in the
    worker's settings) and keeps it.  ``run(job)`` processes one job — typically one
    shot — and returns its result.  Jobs, results and settings must be picklable
    plain objects (paths, numbers, dataclasses), not open files or tensors on a GPU.
    The class must be importable where the workers run (on a cluster: installed in
    the workers' image or shipped with ``runtime_env``).
    """

    def __init__(self, *, device: str, **settings: Any) -> None: ...

    def run(self, job: Any) -> Any: ...


# --------------------------------------------------------------------------- records and errors


@dataclass(frozen=True)
class WorkerInfo:
    """Where one worker runs, as reported by the worker itself once its model is loaded."""

    index: int
    pid: int
    hostname: str
    node_ip: str
    node_id: str | None = None
    gpu_ids: tuple[str, ...] = ()
    cuda_visible_devices: str | None = None
    device: str = "cpu"

    def describe(self) -> str:
        gpu = f"GPU {','.join(self.gpu_ids)}" if self.gpu_ids else "no GPU"
        node = f"node {self.node_ip} ({self.hostname}"
        node += f", id {self.node_id[:12]})" if self.node_id else ")"
        return f"worker {self.index} (pid {self.pid} on {node}, {gpu}, device {self.device})"


class PoolError(RuntimeError):
    """A pool could not start or was misused."""


class WorkerStartError(PoolError):
    """A worker could not be placed or could not load its model."""


class ShotJobError(RuntimeError):
    """A job failed; names the job's index and the worker (node, GPU) that ran it.

    ``cause`` is the job's own exception when it could be brought back (also set as
    ``__cause__``); ``worker`` is ``None`` if the worker never reported where it ran.
    """

    def __init__(self, index: int, job: Any, worker: WorkerInfo | None, cause: BaseException | None, detail: str = ""):
        self.index = index
        self.job = job
        self.worker = worker
        self.cause = cause
        where = worker.describe() if worker is not None else "an unknown worker"
        what = detail or (f"{type(cause).__name__}: {cause}" if cause is not None else "unknown error")
        super().__init__(f"job {index} ({_short(job)}) failed on {where}: {what}")

    def __reduce__(self):  # picklable, e.g. across a Prefect task boundary
        return (_rebuild_job_error, (self.args[0], self.index, self.job, self.worker))


def _rebuild_job_error(message: str, index: int, job: Any, worker: WorkerInfo | None) -> ShotJobError:
    err = ShotJobError.__new__(ShotJobError)
    RuntimeError.__init__(err, message)
    err.index, err.job, err.worker, err.cause = index, job, worker, None
    return err


def _short(obj: Any, limit: int = 80) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- helpers


def resolve_address(address: str | None = None) -> str | None:
    """The Ray address to use: ``address`` if given, else ``$DUB_RAY_ADDRESS``, else ``None`` (start a local Ray).

    An empty string or ``"local"`` also means a local Ray.
    """
    if address is None:
        address = os.environ.get(ADDRESS_ENV) or None
    if address is not None:
        address = address.strip()
        if address in ("", "local"):
            return None
    return address


def ray_available() -> bool:
    """True when ``ray`` can be imported in this environment."""
    try:
        import ray  # noqa: F401
    except Exception:  # absent, or a broken install
        return False
    return True


def pick_device(gpu_ids: Iterable[str] | None = None) -> str:
    """``"cuda"`` if torch sees a GPU, else ``"cpu"``.

    ``gpu_ids`` is what Ray assigned to this worker: with none, the device is
    ``"cpu"`` without importing torch.  (Ray sets ``CUDA_VISIBLE_DEVICES`` to the
    assigned GPUs, so ``"cuda"`` is always the right one of them.)
    """
    if gpu_ids is not None and not list(gpu_ids):
        return "cpu"
    try:
        import torch
    except Exception:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def _with_device(worker_kwargs: Mapping[str, Any] | None, device: str) -> dict[str, Any]:
    kwargs = dict(worker_kwargs or {})
    if kwargs.get("device") is None:
        kwargs["device"] = device
    return kwargs


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


# --------------------------------------------------------------------------- pools


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


def _task_error_text(error: BaseException, cause: BaseException | None) -> str:
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__


class LocalPool:
    """The same interface as ``WorkerPool``, in this process and without Ray: one worker, one job at a time.

    Used when Ray is not installed or ``backend="local"`` is asked for.  The Ray
    options (``address``, ``num_workers``, GPUs and CPUs per worker, ``runtime_env``)
    are accepted and ignored.
    """

    backend = "local"

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
        start_timeout_s: float | None = None,
    ):
        self.worker_cls = worker_cls
        self.worker_kwargs = dict(worker_kwargs or {})
        self.workers: list[WorkerInfo] = []
        self._worker: Any = None
        self._lock = threading.Lock()

    def __enter__(self) -> LocalPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self._worker is not None:
            return
        device = self.worker_kwargs.get("device") or pick_device()
        info = WorkerInfo(
            index=0,
            pid=os.getpid(),
            hostname=socket.gethostname(),
            node_ip="local",
            gpu_ids=("0",) if device.startswith("cuda") else (),
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
            device=device,
        )
        try:
            self._worker = self.worker_cls(**_with_device(self.worker_kwargs, device))
        except Exception as e:
            raise WorkerStartError(
                f"{self.worker_cls.__qualname__} failed to load on {info.describe()}: {type(e).__name__}: {e}"
            ) from e
        self.workers = [info]

    def close(self) -> None:
        self._worker = None  # drops the model

    def run_one(self, job: Any) -> Any:
        """Run one job; thread-safe (callers take turns on the one worker).  Same contract as ``WorkerPool.run_one``."""
        if self._worker is None:
            raise PoolError("the pool is not started: use it as a context manager (with LocalPool(...) as pool)")
        with self._lock:
            try:
                return self._worker.run(job)
            except Exception as e:
                raise ShotJobError(0, job, self.workers[0], e) from e

    def map(self, jobs: Iterable[Any], on_result: OnResult | None = None) -> Iterator[Any]:
        """Run the jobs one after the other; same contract as ``WorkerPool.map``."""
        if self._worker is None:
            raise PoolError("the pool is not started: use it as a context manager (with LocalPool(...) as pool)")
        return self._map(jobs, on_result)

    def _map(self, jobs: Iterable[Any], on_result: OnResult | None) -> Iterator[Any]:
        for index, job in enumerate(jobs):
            try:
                result = self._worker.run(job)
            except Exception as e:
                raise ShotJobError(index, job, self.workers[0], e) from e
            if on_result is not None:
                on_result(index, result)
            yield result


Pool = WorkerPool | LocalPool


def make_pool(
    worker_cls: type,
    worker_kwargs: Mapping[str, Any] | None = None,
    *,
    backend: str = "auto",
    **pool_kwargs: Any,
) -> Pool:
    """A pool for ``worker_cls``: ``backend`` "ray" (``WorkerPool``), "local" (``LocalPool``) or
    "auto" (Ray when it can be imported, else local).  ``pool_kwargs`` are ``WorkerPool``'s
    keyword options (``address``, ``num_workers``, ``gpus_per_worker``, ``cpus_per_worker``,
    ``runtime_env``, ``start_timeout_s``)."""
    if backend == "auto":
        backend = "ray" if ray_available() else "local"
        if backend == "local":
            log.info("ray is not installed: shot workers run in this process")
    if backend == "ray":
        if not ray_available():
            raise PoolError("backend 'ray' asked for but ray is not installed (pip install 'ray==2.*')")
        return WorkerPool(worker_cls, worker_kwargs, **pool_kwargs)
    if backend == "local":
        return LocalPool(worker_cls, worker_kwargs, **pool_kwargs)
    raise ValueError(f"unknown pool backend {backend!r}: use 'auto', 'ray' or 'local'")


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
