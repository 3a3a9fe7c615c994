"""Stage caching for the analysis tasks (shots, faces, active speakers, diarization, dub voices, casting).

:func:`cached_stage` wraps a Prefect task: every call computes the stage's content key
(:mod:`lipsync.stagecache`) from the call's arguments and runs the task with that key
as its cache key, its result persisted under ``<cache>/prefect-results`` -- so a new run
of the same job shows the task as *Cached* and takes its records from there, exactly
as the lip-sync shots do (:mod:`tasks.lipsync`).  The files a stage publishes
(``shots.json``, ``asd.json``, ``original.rttm`` ...) are (re)written from the records
by the wrapper's ``publish(records, arguments, arguments the task ran with)`` after the
task, cached or not, so every run's staging folder is complete.  A stage whose records
point at files (the dub voices' WAVs) is run by ``prepare`` with its working folders
moved into the cache, ``<cache>/stages/<stage>/<key>/``, so they outlive the run.  ``options.cache: false`` runs the plain task.

The wrapper is called exactly like the task it wraps (same arguments); ``.fn``,
``.name``, ``.with_options`` ... are the task's own.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, Callable

from prefect import get_run_logger
from prefect.cache_policies import CachePolicy

from lipsync.stagecache import cache_root

KeyFn = Callable[[dict[str, Any], Path], str]


class CachedStage:
    """A Prefect task run under a content key; see the module text."""

    def __init__(self, task: Any, key: KeyFn, options: Callable[[dict[str, Any]], Any],
                 publish: Callable[[Any, dict[str, Any], dict[str, Any]], None] | None = None,
                 prepare: Callable[[dict[str, Any], str, Path], tuple[dict[str, Any], bool]] | None = None) -> None:
        self.task = task
        self._key, self._options, self._publish, self._prepare = key, options, publish, prepare
        self._signature = inspect.signature(task.fn)
        functools.update_wrapper(self, task.fn)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def key_of(self, *args: Any, **kwargs: Any) -> str | None:
        """The cache key this call would run under (None with ``options.cache: false``)."""
        params = self._bind(args, kwargs)
        options = self._options(params)
        if not getattr(options, "cache", True):
            return None
        root = cache_root(options)
        root.mkdir(parents=True, exist_ok=True)
        return self._key(params, root)

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        params = self._bind(args, kwargs)
        options = self._options(params)
        call = params
        if not getattr(options, "cache", True):
            result = self.task(**params)
        else:
            root = cache_root(options)
            root.mkdir(parents=True, exist_ok=True)
            key = self._key(params, root)
            fresh = False
            if self._prepare is not None:  # stages whose records point at files kept beside the result
                call, fresh = self._prepare(params, key, root)
            policy = CachePolicy.from_cache_key_fn(lambda context, parameters, _key=key: _key)
            task = self.task.with_options(cache_policy=policy, persist_result=True, result_storage=root / "prefect-results",
                                          refresh_cache=fresh)
            state = task(**call, return_state=True)
            try:
                result = state.result()
            except Exception as exc:  # noqa: BLE001 - a cached record that no longer loads is made again
                if state.name != "Cached":
                    raise
                get_run_logger().warning("%s: the stage cache entry %s does not load (%s): running it again",
                                         self.task.name, key[:24], exc)
                result = task.with_options(refresh_cache=True)(**call)
            else:
                if state.name == "Cached":
                    get_run_logger().info("%s: taken from the stage cache (%s)", self.task.name, key[:24])
        if self._publish is not None:
            self._publish(result, params, call)
        return result


def cached_stage(key: KeyFn, options: Callable[[dict[str, Any]], Any],
                 publish: Callable[[Any, dict[str, Any], dict[str, Any]], None] | None = None,
                 prepare: Callable[[dict[str, Any], str, Path], tuple[dict[str, Any], bool]] | None = None) -> Callable[[Any], CachedStage]:
    """Decorator form of :class:`CachedStage`, applied on top of ``@task``."""
    def wrap(task: Any) -> CachedStage:
        return CachedStage(task, key, options, publish, prepare)

    return wrap


def job_options(params: dict[str, Any]) -> Any:
    """The options of a task that takes ``job``."""
    return params["job"].options


def options_param(params: dict[str, Any]) -> Any:
    """The options of a task that takes ``options``."""
    return params["options"]
