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
import os
import socket
import threading
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


# --------------------------------------------------------------------------- pools

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


Pool = Any  # WorkerPool (lipsync.render.ray_pool) or LocalPool


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
        from .ray_pool import WorkerPool

        if not ray_available():
            raise PoolError("backend 'ray' asked for but ray is not installed (pip install 'ray==2.*')")
        return WorkerPool(worker_cls, worker_kwargs, **pool_kwargs)
    if backend == "local":
        return LocalPool(worker_cls, worker_kwargs, **pool_kwargs)
    raise ValueError(f"unknown pool backend {backend!r}: use 'auto', 'ray' or 'local'")



def __getattr__(name: str) -> Any:  # WorkerPool lives with the Ray code, imported when asked for
    if name in ("WorkerPool", "_ensure_ray"):
        from . import ray_pool

        return getattr(ray_pool, name)
    raise AttributeError(name)
