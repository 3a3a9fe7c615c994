"""When a failed task is tried again: transient failures only.

A deterministic input error -- a damaged or mis-sized master, a dub track of the
wrong length, a manifest or casting that names what does not exist, missing or
corrupt weights, an RTTM that does not parse -- fails the same way every time, so
it fails **once**, with its message, and the run stops.  Transient failures are
tried again: a worker lost or out of memory (the engine already halves its batch),
storage throttling or a dropped connection, other operating-system hiccups.  Storage
errors are told apart by their type (a :class:`dubcore.storage.TransientStorageError`,
e.g. :class:`dubcore.s3.S3Throttled`, heals), never by the words of their message.

Every task with ``retries`` uses :func:`transient` as its ``retry_condition_fn``.
"""

from __future__ import annotations

from typing import Any

#: Failures of the input or the configuration: never retried.
DETERMINISTIC_NAMES = (
    "MediaError", "DamagedMediaError", "ManifestError", "SchemaError", "CastingError", "RTTMError", "StoreError",
    "DiarizationError", "ReviewError",
)


def is_transient(exc: BaseException) -> bool:
    """True when trying again may succeed (see the module docstring)."""
    from dubcore.storage import StorageError, TransientStorageError
    from lipsync.render.pool import ShotJobError
    from lipsync.faces.retinaface import DetectorOutOfMemoryError
    from lipsync.render.params import LipSyncOutOfMemoryError

    if isinstance(exc, (LipSyncOutOfMemoryError, DetectorOutOfMemoryError, MemoryError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, ShotJobError):
        return "worker lost" in str(exc) or isinstance(exc.__cause__, LipSyncOutOfMemoryError)
    if isinstance(exc, StorageError):  # throttling or a dropped connection heals; a missing object does not
        return isinstance(exc, TransientStorageError)
    if any(k.__name__ in DETERMINISTIC_NAMES for k in type(exc).__mro__):
        return False
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(exc, OSError):  # a disk or network hiccup
        return True
    return False  # ValueError, TypeError, a bug...: the same input fails the same way


def transient(task: Any, run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only a transient failure."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - classified, not swallowed
        return is_transient(exc)
    return False
