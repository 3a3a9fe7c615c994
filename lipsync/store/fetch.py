"""Where the checkpoints live and how they get there: the store folder, hashing, pull, verify, resolve.

Files live flat in a *store* directory chosen, in this order, by the ``store``
argument, the ``DUB_MODEL_STORE`` environment variable, or
``~/.cache/dub-film/models``.  The contracts of :func:`pull`, :func:`verify` and
:func:`resolve` are in the doc of :mod:`lipsync.store`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import urllib.parse
import urllib.request
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

from dubcore.schema import SchemaError, read_json, write_json

from .errors import ChecksumError, MissingWeightsError, UnknownWeightsError, UnverifiedWeightsError
from .registry import REGISTRY, WeightsEntry, get_entry

ENV_STORE = "DUB_MODEL_STORE"
DEFAULT_STORE = Path("~/.cache/dub-film/models")
_CHUNK = 1 << 20


# --------------------------------------------------------------------------- storage


@dataclass(frozen=True)
class LocalStore:
    """A flat directory of model files -- the only storage kind for now."""

    root: Path

    def path(self, filename: str) -> Path:
        """Where ``filename`` lives in this store."""
        return self.root / filename

    @contextmanager
    def temporary(self, filename: str) -> Iterator[Path]:
        """Yield a fresh temporary path beside ``filename``; it is always removed afterwards
        (move it into place with ``os.replace`` inside the block to keep it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", suffix=".partial", dir=self.root)
        os.close(fd)
        path = Path(tmp)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)


def _open_store(store: str | os.PathLike[str] | LocalStore | None) -> LocalStore:
    """Turn a store argument into a storage object.

    None means ``$DUB_MODEL_STORE``, else ``~/.cache/dub-film/models``.  Local
    directories (or ``file://`` URLs) only for now; any other scheme is refused
    with a :class:`ValueError` that says what to do.  This is the hook where an
    object store will be plugged in.
    """
    if isinstance(store, LocalStore):
        return store
    if store is None:
        store = os.environ.get(ENV_STORE) or DEFAULT_STORE
    text = os.fspath(store)
    if text.startswith("file://"):
        return LocalStore(Path(urllib.request.url2pathname(urllib.parse.urlsplit(text).path)).expanduser())
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise ValueError(
            f"model store {text!r}: {scheme}:// stores are not supported yet; "
            f"use a local directory (pass --store /path or set {ENV_STORE}=/path)"
        )
    return LocalStore(Path(text).expanduser())


def store_root(store: str | os.PathLike[str] | None = None) -> Path:
    """The directory the store argument resolves to (it need not exist)."""
    return _open_store(store).root


def path_for(entry: WeightsEntry | str, store: str | os.PathLike[str] | None = None) -> Path:
    """Where ``entry``'s file lives (or would live) in ``store``."""
    e = get_entry(entry) if isinstance(entry, str) else entry
    return _open_store(store).path(e.filename)


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


# --------------------------------------------------------------------------- hashing


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _copy_hashing(src: IO[bytes], dst_path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(dst_path, "wb") as dst:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            h.update(chunk)
            dst.write(chunk)
            n += len(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return h.hexdigest(), n


def _open_source(source: str | os.PathLike[str]) -> IO[bytes]:
    """Open a local path, ``file://`` URL or http(s) URL for reading bytes."""
    text = os.fspath(source)
    if "://" in text:
        return urllib.request.urlopen(text, timeout=60)  # noqa: S310 - https/file URLs from the registry or the user
    return open(Path(text).expanduser(), "rb")


def _unpack(archive: Path, entry: WeightsEntry, dst: Path, where: str) -> tuple[str, int]:
    """Extract ``meta['archive_member']`` (or the only file) of the zip ``archive`` into ``dst``."""
    member = entry.meta.get("archive_member")
    try:
        with zipfile.ZipFile(archive) as zf:
            files = [i for i in zf.infolist() if not i.is_dir()]
            match = [i for i in files if i.filename == member or Path(i.filename).name == member] if member else files
            if len(match) != 1:
                raise ChecksumError(
                    f"{entry.name}: archive {where} holds {[i.filename for i in files]}; expected exactly one "
                    f"{member or 'file'} -- not the published archive, or the release changed (see {entry.url})"
                )
            with zf.open(match[0]) as src:
                return _copy_hashing(src, dst)
    except zipfile.BadZipFile as exc:
        raise ChecksumError(f"{entry.name}: {where} is not a readable zip archive ({exc}); pull it again") from exc


# --------------------------------------------------------------------------- pull / verify / resolve


def _write_stamp(path: Path, entry: WeightsEntry, sha256: str, *, verified: bool, extra: Mapping[str, Any]) -> None:
    st = path.stat()
    payload = {
        "entry": entry.name,
        "family": entry.family,
        "url": entry.url,
        "filename": entry.filename,
        "sha256": sha256,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "verified": verified,
        "stamped_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }
    try:
        write_json(_stamp_path(path), "models", payload)
    except OSError:
        pass  # read-only store: resolve() will simply re-hash each time


def _read_stamp(path: Path) -> dict[str, Any] | None:
    try:
        return read_json(_stamp_path(path), "models")
    except (OSError, SchemaError, ValueError):
        return None


def _stamp_is_fresh(stamp: Mapping[str, Any] | None, path: Path, entry: WeightsEntry) -> bool:
    """True when the stamp belongs to ``entry`` as registered now and the file is unchanged since."""
    if not stamp or stamp.get("entry") != entry.name:
        return False
    if entry.sha256 is not None:
        recorded = stamp.get("sha256") if entry.archive is None else stamp.get("download_sha256")
        if recorded != entry.sha256:
            return False
    st = path.stat()
    return stamp.get("size") == st.st_size and stamp.get("mtime_ns") == st.st_mtime_ns


def pull(
    name: str,
    store: str | os.PathLike[str] | None = None,
    *,
    source: str | os.PathLike[str] | None = None,
    allow_unverified: bool = False,
    force: bool = False,
) -> Path:
    """Fetch entry ``name`` into ``store`` and return the stored file's path.

    ``source`` (a local path or ``file://``/``https://`` URL) replaces the entry's
    URL, e.g. to copy a file fetched elsewhere.  The download lands in a temporary
    name beside the target, is checked against the entry's size and sha256
    (:class:`ChecksumError` otherwise), unpacked if it is an archive, then moved
    into place with ``os.replace``; on any failure nothing is left behind.  A file
    already present and verified is kept unless ``force``.  Entries without a
    sha256 need ``allow_unverified=True`` (:class:`UnverifiedWeightsError`).
    """
    entry = get_entry(name)
    if entry.sha256 is None and not allow_unverified:
        raise UnverifiedWeightsError(
            f"{entry.name}: no sha256 is recorded for {entry.url}, so a download cannot be checked. "
            f"To fetch it anyway and trust the file on first use, run "
            f"`dub models pull {entry.name} --allow-unverified` (Python: pull({entry.name!r}, allow_unverified=True))"
        )
    st = _open_store(store)
    final = st.path(entry.filename)
    if final.exists() and not force:
        try:
            return verify(entry.name, st)
        except (ChecksumError, MissingWeightsError):
            pass  # stale or unstamped: fetch again
    src = source if source is not None else entry.url
    where = os.fspath(src)
    with st.temporary(entry.filename) as download:
        try:
            with _open_source(src) as fh:
                got_sha, got_size = _copy_hashing(fh, download)
        except OSError as exc:
            raise MissingWeightsError(
                f"{entry.name}: cannot read {where} ({exc}); on a machine without internet, fetch the file "
                f"elsewhere and run `dub models pull {entry.name} --source /path/to/{Path(entry.url).name}`"
            ) from exc
        if entry.size is not None and got_size != entry.size:
            raise ChecksumError(
                f"{entry.name}: {where} is {got_size} bytes, expected {entry.size} "
                f"(sha256 {got_sha}, expected {entry.sha256}); it is truncated or the wrong file; nothing was written to the store"
            )
        if entry.sha256 is not None and got_sha != entry.sha256:
            raise ChecksumError(
                f"{entry.name}: {where} has sha256 {got_sha}, expected {entry.sha256}; "
                f"it is corrupt or not the published file ({entry.url}); nothing was written to the store"
            )
        extra: dict[str, Any] = {"source": where, "download_sha256": got_sha, "download_size": got_size}
        prefix = entry.meta.get("url_hash_prefix")
        if prefix:
            extra["url_hash_prefix_match"] = got_sha.startswith(prefix)
        if entry.archive == "zip":
            with st.temporary(entry.filename) as unpacked:
                file_sha, _ = _unpack(download, entry, unpacked, where)
                os.replace(unpacked, final)
        elif entry.archive is None:
            file_sha = got_sha
            os.replace(download, final)
        else:
            raise ValueError(f"{entry.name}: unknown archive kind {entry.archive!r} in the registry")
    _write_stamp(final, entry, file_sha, verified=entry.verified, extra=extra)
    return final


def verify(name: str, store: str | os.PathLike[str] | None = None) -> Path:
    """Re-hash entry ``name``'s file in ``store``; return its path or raise.

    The expected hash is the entry's sha256 for plain files; for archives and
    unverified entries it is the hash recorded in the stamp when the file was
    pulled.  :class:`MissingWeightsError` when the file (or, where needed, its
    stamp) is missing; :class:`ChecksumError` when the hash differs.  A passing
    check refreshes the stamp.
    """
    entry = get_entry(name)
    st = _open_store(store)
    path = st.path(entry.filename)
    if not path.is_file():
        raise _missing(entry, path)
    stamp = _read_stamp(path)
    if entry.archive is None and entry.sha256 is not None:
        expected = entry.sha256
    elif stamp and stamp.get("entry") == entry.name and stamp.get("sha256"):
        if entry.sha256 is not None and stamp.get("download_sha256") != entry.sha256:
            raise ChecksumError(
                f"{entry.name}: {path} was unpacked from a download with sha256 {stamp.get('download_sha256')}, "
                f"expected {entry.sha256}; run `dub models pull {entry.name} --force`"
            )
        expected = str(stamp["sha256"])
    else:
        raise MissingWeightsError(
            f"{entry.name}: {path} is present but was not pulled through dub-film (no stamp {_stamp_path(path)}), "
            f"so it cannot be checked; run `dub models pull {entry.name} --force`, or pass the file's path instead "
            f"of the entry name to use it unchecked"
        )
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(
            f"{entry.name}: {path} has sha256 {actual}, expected {expected}; the file is corrupt or was replaced "
            f"-- run `dub models pull {entry.name} --force`"
        )
    keep = {k: v for k, v in (stamp or {}).items() if k in ("source", "download_sha256", "download_size", "url_hash_prefix_match")}
    verified = entry.verified if stamp is None else bool(stamp.get("verified", entry.verified))
    _write_stamp(path, entry, actual, verified=verified, extra=keep)
    return path


def _missing(entry: WeightsEntry, path: Path) -> MissingWeightsError:
    return MissingWeightsError(
        f"model weights {entry.name!r} ({entry.family}, {entry.license}) are not in the model store: "
        f"expected {path}. Fetch them with `dub models pull {entry.name}` "
        f"(store {path.parent}; choose another with --store or {ENV_STORE})"
    )


def resolve(name_or_path: str | os.PathLike[str], store: str | os.PathLike[str] | None = None) -> Path:
    """Path of a present, verified file for a registry name, or of an existing file path.

    A registry name must be in the store (:class:`MissingWeightsError` naming the
    entry, the expected path and ``dub models pull <name>``) and match its hash:
    a fresh stamp (same size and mtime as when last hashed) counts as verified,
    otherwise the file is re-hashed (:class:`ChecksumError` on mismatch).  A path
    is returned as is, unchecked -- the caller chose that file.
    """
    text = os.fspath(name_or_path)
    if text in REGISTRY:
        entry = REGISTRY[text]
        path = _open_store(store).path(entry.filename)
        if not path.is_file():
            raise _missing(entry, path)
        if _stamp_is_fresh(_read_stamp(path), path, entry):
            return path
        return verify(entry.name, store)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    raise UnknownWeightsError(
        f"{text!r} is neither a known model ({', '.join(sorted(REGISTRY))}) nor an existing file"
    )
