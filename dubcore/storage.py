"""Where inputs come from and outputs go: one interface, a local implementation.

Every task reads inputs through :func:`open_storage` and writes outputs through a
:class:`Staging` area that is published only when the job is complete: readers
never see a half-written result.  An ``s3://`` backend plugs in behind the same
interface (registered in :data:`BACKENDS`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable


class StorageError(RuntimeError):
    """A storage operation failed.  Not worth trying again unless it is a :class:`TransientStorageError`."""


class TransientStorageError(StorageError):
    """A storage failure that may heal, so trying again may succeed: throttling, a dropped
    connection, a server error, a download corrupted in transit.  Backends raise subclasses
    (:class:`dubcore.s3.S3Transient`); retry policies test for this class, not for words
    in the message."""


class Staging(ABC):
    """A private work area for one run's outputs; ``commit`` publishes, ``abort`` discards."""

    root: Path

    @abstractmethod
    def commit(self) -> str:
        """Publish every file of the staging area; return the published location."""

    @abstractmethod
    def abort(self) -> None:
        """Discard the staging area, leaving the destination as it was."""


class Storage(ABC):
    scheme: str = ""

    @abstractmethod
    def local_path(self, uri: str, workdir: Path) -> Path:
        """A local file holding the object at ``uri`` (downloaded into ``workdir`` if remote)."""

    @abstractmethod
    def exists(self, uri: str) -> bool: ...

    @abstractmethod
    def stage(self, dest: str) -> Staging:
        """Open a staging area whose contents ``commit`` publishes at ``dest``."""

    def read_bytes(self, uri: str) -> bytes:
        """The whole content of the object at ``uri`` (small files: manifests, markers)."""
        with tempfile.TemporaryDirectory(prefix="dub-film-read-") as tmp:
            return self.local_path(uri, Path(tmp)).read_bytes()


class LocalStaging(Staging):
    """Outputs are written in ``DEST/.partial-<id>/`` and moved into ``DEST`` on commit.

    ``DEST`` is created only if it did not exist; on abort it is removed again if it
    was created for this run, so a failed run leaves nothing behind.
    """

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self._created_dest = not dest.exists()
        dest.mkdir(parents=True, exist_ok=True)
        self.root = dest / f".partial-{uuid.uuid4().hex[:12]}"
        self.root.mkdir()

    def commit(self) -> str:
        for entry in sorted(self.root.iterdir()):
            target = self.dest / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(entry, target)
        self.root.rmdir()
        return str(self.dest)

    def abort(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        if self._created_dest:
            try:
                self.dest.rmdir()  # only if empty: never delete what someone else put there
            except OSError:
                pass


class LocalStorage(Storage):
    scheme = "file"

    @staticmethod
    def _path(uri: str) -> Path:
        return Path(uri[len("file://") :] if uri.startswith("file://") else uri).expanduser()

    def local_path(self, uri: str, workdir: Path) -> Path:
        return self._path(uri)

    def exists(self, uri: str) -> bool:
        return self._path(uri).exists()

    def stage(self, dest: str) -> Staging:
        return LocalStaging(self._path(dest))


def _s3_backend() -> Storage:
    """``s3://``: :class:`dubcore.s3.S3Storage`, imported only when an s3:// URI is opened (boto3 is heavy)."""
    try:
        from dubcore.s3 import S3Storage
    except ImportError as exc:
        raise StorageError(f"s3:// storage needs boto3, which cannot be imported ({exc}); pip install boto3") from exc
    return S3Storage()


#: Storage backends by URI scheme (factories; ``s3`` imports boto3 on first use).
BACKENDS: dict[str, Callable[[], Storage]] = {"file": LocalStorage, "s3": _s3_backend}


def scheme_of(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else "file"


def open_storage(uri: str) -> Storage:
    scheme = scheme_of(uri)
    try:
        return BACKENDS[scheme]()
    except KeyError:
        raise StorageError(
            f"{uri}: storage scheme '{scheme}://' is not supported here; supported: {sorted(BACKENDS)}"
        ) from None
