"""Shot workers on a pool: Ray actors (one per GPU, model loaded once) and the in-process fallback.

The Ray tests start a local Ray that is told the machine has 2 GPUs (Ray then sets
CUDA_VISIBLE_DEVICES to "0" or "1" in each actor; torch finds no CUDA here, so the
workers fall back to CPU), and check how a 6-shot film is split over the two.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from lipsync.render.pool import (
    ADDRESS_ENV,
    LocalPool,
    PoolError,
    ShotJobError,
    WorkerPool,
    WorkerStartError,
    make_pool,
    pick_device,
    ray_available,
    resolve_address,
)

FILM = [f"shot-{i:04d}" for i in range(6)]  # a 6-shot film


class DummyWorker:
    """Stands for a lip-sync model: records each load, sleeps a little per job."""

    def __init__(self, *, load_log: str, device: str, delay: float = 0.2, fail_on: str | None = None):
        with open(load_log, "a") as f:
            f.write(f"load {os.getpid()} {os.environ.get('CUDA_VISIBLE_DEVICES', '-')}\n")
        self.device = device
        self.delay = delay
        self.fail_on = fail_on

    def run(self, job):
        name, delay = job if isinstance(job, tuple) else (job, self.delay)
        time.sleep(delay)
        if name == self.fail_on:
            raise ValueError(f"cannot dub {name}")
        return (job, os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES"), self.device)


class BrokenWorker:
    def __init__(self, *, device: str):
        raise FileNotFoundError("checkpoint wav2lip_gan.pth missing")

    def run(self, job):  # pragma: no cover
        return job


def load_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- Ray, 2 (fake) GPUs


def _import_ray():
    return pytest.importorskip("ray", reason="ray is not installed: the Ray worker pool cannot be tested")


@pytest.fixture(scope="class")
def fake_two_gpu_ray():
    """A local Ray told that this machine has 2 GPUs; shut down after the class."""
    ray = _import_ray()
    from ray import cloudpickle

    # The workers cannot import this test module (tests/ is not on their path): ship its classes by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_gpus=2, num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="class")
def load_failure(fake_two_gpu_ray):
    """What a pool whose worker cannot load its model raises (tried while both GPUs are still free)."""
    with pytest.raises(WorkerStartError) as exc:
        with WorkerPool(BrokenWorker, {"device": "cpu"}, num_workers=1, start_timeout_s=60):
            pass
    return exc.value


@pytest.fixture(scope="class")
def gpu_pool(fake_two_gpu_ray, load_failure, tmp_path_factory):
    load_log = tmp_path_factory.mktemp("loads") / "loads.txt"
    with WorkerPool(DummyWorker, {"load_log": str(load_log), "fail_on": "bad-shot"}) as pool:
        pool.load_log = load_log
        yield pool
    assert fake_two_gpu_ray.is_initialized(), "the pool must not shut down a Ray it did not start"


@pytest.mark.usefixtures("fake_two_gpu_ray")
class TestTwoGpuWorkers:
    def assert_two_loads(self, pool):
        lines = load_lines(pool.load_log)
        assert len(lines) == 2, f"the model must load once per worker, got {lines}"
        assert sorted(cvd for _, _, cvd in lines) == ["0", "1"]
        assert {int(pid) for _, pid, _ in lines} == {w.pid for w in pool.workers}

    def test_six_shot_film_split_over_two_gpu_workers(self, gpu_pool):
        assert len(gpu_pool.workers) == 2
        assert sorted(w.gpu_ids for w in gpu_pool.workers) == [("0",), ("1",)]
        seen: list[int] = []
        results = list(gpu_pool.map(FILM, on_result=lambda i, r: seen.append(i)))

        assert [job for job, *_ in results] == FILM  # job order
        assert sorted(seen) == list(range(6))  # every job done exactly once
        pids = Counter(pid for _, pid, _, _ in results)
        assert len(pids) == 2 and sum(pids.values()) == 6
        cvd_of = {pid: cvd for _, pid, cvd, _ in results}
        assert sorted(cvd_of.values()) == ["0", "1"]  # two workers on different GPUs
        assert {device for *_, device in results} == {pick_device()}
        self.assert_two_loads(gpu_pool)

    def test_free_worker_takes_next_job(self, gpu_pool):
        # One long shot: the other worker takes every short one meanwhile (a static split would give 3 + 3).
        jobs = [("long", 2.0)] + [(f"short-{i}", 0.05) for i in range(5)]
        results = list(gpu_pool.map(jobs))
        assert [job for job, *_ in results] == jobs
        long_pid = results[0][1]
        assert all(pid != long_pid for _, pid, _, _ in results[1:])
        self.assert_two_loads(gpu_pool)

    def test_job_error_names_index_and_worker(self, gpu_pool):
        jobs = ["shot-a", "shot-b", "bad-shot", "shot-c"]
        with pytest.raises(ShotJobError, match=r"job 2 .*failed on worker [01] \(pid \d+ on node .*GPU [01].*cannot dub") as exc:
            list(gpu_pool.map(jobs))
        assert exc.value.index == 2
        assert exc.value.job == "bad-shot"
        assert exc.value.worker.gpu_ids in (("0",), ("1",))
        assert isinstance(exc.value.cause, ValueError)
        # The pool is still usable, and no model was reloaded.
        assert [job for job, *_ in gpu_pool.map(FILM[:2])] == FILM[:2]
        self.assert_two_loads(gpu_pool)

    def test_local_pool_same_results_in_order(self, gpu_pool, tmp_path):
        ray_results = [(job, device) for job, _, _, device in gpu_pool.map(FILM)]
        with LocalPool(DummyWorker, {"load_log": str(tmp_path / "loads.txt"), "delay": 0.0}) as pool:
            local_results = [(job, device) for job, _, _, device in pool.map(FILM)]
        assert local_results == ray_results

    def test_worker_that_cannot_load_is_reported(self, load_failure):
        assert re.search(r"BrokenWorker failed to load on worker 0 \(pid \d+ on node .*GPU [01].*checkpoint", str(load_failure))

    def test_worker_that_cannot_be_placed_is_reported(self, gpu_pool):
        # Both GPUs are held by gpu_pool: a new pool's worker cannot be placed, and says why.
        with pytest.raises(WorkerStartError, match=r"only 0 of 1 workers started within 1 s .*1 GPU"):
            with WorkerPool(DummyWorker, {"load_log": "/dev/null"}, num_workers=1, start_timeout_s=1):
                pass
        assert [job for job, *_ in gpu_pool.map(FILM[:2])] == FILM[:2]


def test_pool_starts_and_stops_its_own_local_ray(tmp_path, monkeypatch):
    """No Ray running and no address: the pool starts a local Ray, uses CPU workers here, and shuts it down."""
    ray = _import_ray()
    from ray import cloudpickle

    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    if ray.is_initialized():
        ray.shutdown()
    load_log = tmp_path / "loads.txt"
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with WorkerPool(DummyWorker, {"load_log": str(load_log), "delay": 0.05}, num_workers=2) as pool:
            assert ray.is_initialized()
            gpus = int(ray.cluster_resources().get("GPU", 0))
            results = list(pool.map(FILM))
            assert len(pool.workers) == (gpus or 2)
            if not gpus:
                assert {w.device for w in pool.workers} == {"cpu"}
                assert all(w.gpu_ids == () for w in pool.workers)
        assert [job for job, *_ in results] == FILM
        assert len(load_lines(load_log)) == len(pool.workers)
        assert not ray.is_initialized(), "a pool that started Ray must shut it down"
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        if ray.is_initialized():
            ray.shutdown()


# --------------------------------------------------------------------------- without Ray


def test_local_pool_in_order_loads_once_and_names_failed_job(tmp_path):
    load_log = tmp_path / "loads.txt"
    seen = []
    with LocalPool(DummyWorker, {"load_log": str(load_log), "delay": 0.0, "device": "cpu", "fail_on": "bad"}) as pool:
        results = list(pool.map(FILM, on_result=lambda i, r: seen.append(i)))
        assert [job for job, *_ in results] == FILM
        assert seen == list(range(6))
        assert {device for *_, device in results} == {"cpu"}
        with pytest.raises(ShotJobError, match=r"job 1 \('bad'\) failed on worker 0 .*ValueError: cannot dub bad") as exc:
            list(pool.map(["ok", "bad", "never"]))
        assert exc.value.index == 1 and isinstance(exc.value.__cause__, ValueError)
    assert len(load_lines(load_log)) == 1


def test_pool_must_be_started(tmp_path):
    pool = LocalPool(DummyWorker, {"load_log": str(tmp_path / "l.txt"), "device": "cpu"})
    with pytest.raises(PoolError, match="context manager"):
        pool.map(FILM)


def test_make_pool_backends(tmp_path):
    kwargs = {"load_log": str(tmp_path / "l.txt")}
    assert isinstance(make_pool(DummyWorker, kwargs, backend="local"), LocalPool)
    expected = WorkerPool if ray_available() else LocalPool
    assert isinstance(make_pool(DummyWorker, kwargs, backend="auto", num_workers=2), expected)
    with pytest.raises(ValueError, match="unknown pool backend"):
        make_pool(DummyWorker, kwargs, backend="dask")


def test_address_from_argument_or_environment(monkeypatch):
    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    assert resolve_address(None) is None
    assert resolve_address("local") is None
    assert resolve_address("ray://head:10001") == "ray://head:10001"
    monkeypatch.setenv(ADDRESS_ENV, "auto")
    assert resolve_address(None) == "auto"
    assert WorkerPool(DummyWorker, {}).address == "auto"
    assert resolve_address("ray://other:10001") == "ray://other:10001"  # the argument wins
    monkeypatch.setenv(ADDRESS_ENV, "")
    assert resolve_address(None) is None
