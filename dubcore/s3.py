"""The ``s3://`` storage backend: inputs downloaded and verified, outputs published atomically.

Configuration (all optional; the standard AWS credential chain supplies credentials
and region: env vars, ``AWS_PROFILE``/config files, SSO, instance or task roles):

``DUB_S3_ENDPOINT_URL``
    Endpoint of an S3-compatible store (MinIO, Ceph, a local moto server...).
    Unset: boto3's own ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` apply, else AWS.
``DUB_S3_RETRY_MODE`` / ``DUB_S3_MAX_ATTEMPTS``
    botocore retry mode (``standard`` by default, or ``adaptive``) and attempts
    per request (5): transient network errors, 5xx and throttling are retried.
``DUB_S3_CONNECT_TIMEOUT`` / ``DUB_S3_READ_TIMEOUT``
    Socket timeouts in seconds (10 / 60).
``DUB_S3_ADDRESSING_STYLE``
    ``path`` or ``virtual`` (botocore picks by default).
``DUB_S3_MULTIPART_THRESHOLD`` / ``DUB_S3_MULTIPART_CHUNKSIZE``
    Files from this size on are transferred in parts (64 MiB; chunk size defaults
    to the threshold).  Accepts bytes or ``64MiB``-style sizes; S3's minimum part
    size is 5 MiB.
``DUB_S3_MAX_CONCURRENCY``
    Parallel requests of one transfer manager (10).
``DUB_S3_STAGING_DIR``
    Local folder under which staging areas are created (the system temp dir).

Publication protocol (what readers may rely on)
-----------------------------------------------
A run writes only to a local folder (:attr:`S3Staging.root`); nothing reaches S3
until :meth:`S3Staging.commit`, which

1. uploads every file to ``DEST/.staging-<run>/...`` (multipart for large files,
   with SHA-256 checksums that S3 stores and verifies);
2. deletes ``DEST/_SUCCESS`` if an earlier run left one -- before anything under
   ``DEST`` changes, so a success marker never stands over mixed content;
3. server-side copies each staged object to its final key under ``DEST``;
4. deletes the files the previous ``_SUCCESS`` listed that this run did not write
   (objects under ``DEST`` that no ``_SUCCESS`` listed are never touched);
5. writes ``DEST/_SUCCESS`` LAST: a versioned JSON document (``dub-film/success@1``)
   listing every file (``key`` relative to ``DEST``, ``size``, ``sha256`` hex);
6. deletes the staging prefix and the local folder.

**A location is published when ``DEST/_SUCCESS`` exists**, and its content is what
``_SUCCESS`` lists (:func:`is_published`, :func:`read_success`).  While a commit
is in flight, or after one failed, there is no ``_SUCCESS``.  Two runs committing
to the same ``DEST`` at the same time are not serialised: the last ``_SUCCESS``
names the run whose files it lists, but files may have been overwritten by the
other run, so give concurrent runs distinct destinations.

Downloads (:meth:`S3Storage.local_path`) are written under a temporary name in
the work folder and renamed only once verified: size against HeadObject, then
the object's SHA-256 checksum when S3 has one (whole-object or per-part
composite), else the ETag when it is an MD5 (single-part, or ``md5-N`` multipart
with the part layout read back from S3).  When neither can be recomputed (SSE-KMS
or SSE-C objects without a SHA-256 checksum, non-MD5 ETags of other stores, a
multipart object whose part sizes are not uniform) only the size is checked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import mimetypes
import os
import re
import shutil
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError as BotoConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)
from s3transfer.exceptions import RetriesExceededError, TransferNotDoneError

from dubcore import schema
from dubcore.storage import Staging, Storage, StorageError

log = logging.getLogger(__name__)

ENV_ENDPOINT = "DUB_S3_ENDPOINT_URL"
MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_RETRY_MODE = "standard"
SUCCESS_NAME = "_SUCCESS"
STAGING_PREFIX = ".staging-"
SUCCESS_KIND = "success"
CACHE_DIR = ".cache"  # under WORKDIR/s3/; bucket names cannot start with a dot

# The ``_SUCCESS`` document kind.  Registered here so that this module works on its
# own; dubcore.schema.VERSIONS is the place where it belongs.
schema.VERSIONS.setdefault(SUCCESS_KIND, 1)

#: Errors of the AWS stack that mean "the S3 operation failed" (mapped to StorageError).
S3_ERRORS: tuple[type[BaseException], ...] = (BotoCoreError, ClientError, Boto3Error, RetriesExceededError,
                                              TransferNotDoneError)

_ACCESS_CODES = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                 "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem"}
_THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "503",
                   "TooManyRequests", "RequestThrottled"}


# --------------------------------------------------------------------------- configuration


def _env_bytes(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    m = re.fullmatch(r"(\d+)\s*([KMG]i?B?)?", text, flags=re.IGNORECASE)
    if not m:
        raise StorageError(f"{name}={text!r} is not a size; write bytes (67108864) or e.g. 64MiB")
    unit = (m.group(2) or "").upper().rstrip("B").rstrip("I")
    return int(m.group(1)) * {"": 1, "K": 1024, "M": MiB, "G": 1024 * MiB}[unit]


def _env_number(name: str, default: float, kind: type = float) -> Any:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return kind(text)
    except ValueError:
        raise StorageError(f"{name}={text!r} is not a number; unset it or give e.g. {default}") from None


def endpoint_url_from_env() -> str | None:
    """``$DUB_S3_ENDPOINT_URL``, or None (boto3 then applies ``AWS_ENDPOINT_URL*`` itself)."""
    return os.environ.get(ENV_ENDPOINT, "").strip() or None


_SESSIONS: dict[tuple[tuple[str, str], ...], boto3.session.Session] = {}
_SESSIONS_LOCK = threading.Lock()


def _client_from_shared_session(**kwargs: Any) -> Any:
    """A client from a session shared while the ``AWS_*`` environment is unchanged.

    A fresh session costs ~0.4 s (service models are parsed again); a session is
    keyed by the AWS environment so credentials resolved from it never go stale
    when that environment changes.  ``Session.client`` is not thread-safe: locked.
    """
    env_key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(env_key)
        if session is None:
            if len(_SESSIONS) > 8:
                _SESSIONS.clear()
            session = _SESSIONS[env_key] = boto3.session.Session()
        return session.client("s3", **kwargs)


def s3_client(endpoint_url: str | None = None, *, max_attempts: int | None = None, retry_mode: str | None = None,
              connect_timeout: float | None = None, read_timeout: float | None = None,
              addressing_style: str | None = None, session: boto3.session.Session | None = None) -> Any:
    """The one place S3 clients are made.

    Arguments override the ``DUB_S3_*`` environment (see the module doc); credentials
    and region come from the standard AWS chain.  Retries (``standard`` mode by
    default, 5 attempts) cover connection errors, 5xx answers and throttling.
    """
    endpoint_url = endpoint_url or endpoint_url_from_env()
    mode = retry_mode or os.environ.get("DUB_S3_RETRY_MODE", "").strip() or DEFAULT_RETRY_MODE
    if mode not in ("standard", "adaptive", "legacy"):
        raise StorageError(f"DUB_S3_RETRY_MODE={mode!r}: use 'standard' or 'adaptive'")
    attempts = max_attempts if max_attempts is not None else _env_number("DUB_S3_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, int)
    style = addressing_style or os.environ.get("DUB_S3_ADDRESSING_STYLE", "").strip() or None
    s3_opts = {"addressing_style": style} if style else None
    config = Config(
        retries={"mode": mode, "max_attempts": max(1, int(attempts))},
        connect_timeout=connect_timeout if connect_timeout is not None else _env_number("DUB_S3_CONNECT_TIMEOUT", 10.0),
        read_timeout=read_timeout if read_timeout is not None else _env_number("DUB_S3_READ_TIMEOUT", 60.0),
        max_pool_connections=32,
        s3=s3_opts,
    )
    if session is not None:
        return session.client("s3", endpoint_url=endpoint_url, config=config)
    return _client_from_shared_session(endpoint_url=endpoint_url, config=config)


def transfer_config(multipart_threshold: int | None = None, multipart_chunksize: int | None = None,
                    max_concurrency: int | None = None) -> TransferConfig:
    """Managed-transfer settings: multipart from ``multipart_threshold`` bytes on (default 64 MiB)."""
    threshold = multipart_threshold or _env_bytes("DUB_S3_MULTIPART_THRESHOLD", DEFAULT_MULTIPART_THRESHOLD)
    chunk = multipart_chunksize or _env_bytes("DUB_S3_MULTIPART_CHUNKSIZE", max(threshold, MIN_PART_SIZE))
    if chunk < MIN_PART_SIZE:
        raise StorageError(f"multipart chunk size {chunk} is below S3's 5 MiB minimum part size; "
                           f"set DUB_S3_MULTIPART_CHUNKSIZE to 5MiB or more")
    return TransferConfig(multipart_threshold=threshold, multipart_chunksize=chunk,
                          max_concurrency=max_concurrency or _env_number("DUB_S3_MAX_CONCURRENCY", 10, int),
                          preferred_transfer_client="classic")


# --------------------------------------------------------------------------- URIs

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]")


def parse_s3_uri(uri: str, *, require_key: bool = True) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``("bucket", "key")``; StorageError naming the URI, the problem and the fix.

    With ``require_key=False`` a bare ``s3://bucket`` (or ``s3://bucket/``) gives an
    empty key (a destination at the bucket's root).
    """
    example = "write it as s3://BUCKET/path/to/object"
    if not isinstance(uri, str):
        raise StorageError(f"{uri!r}: an S3 URI must be a string; {example}")
    if uri != uri.strip() or any(ord(ch) < 32 or ord(ch) == 127 for ch in uri):
        raise StorageError(f"{uri!r}: S3 URI contains whitespace at its ends or control characters; {example}")
    if uri[:5].lower() != "s3://":
        raise StorageError(f"{uri!r}: not an S3 URI (it must start with 's3://'); {example}")
    bucket, sep, key = uri[5:].partition("/")
    if not bucket:
        raise StorageError(f"{uri!r}: S3 URI has no bucket name; {example}")
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise StorageError(
            f"{uri!r}: {bucket!r} is not a valid bucket name (3-63 characters: lowercase letters, digits, "
            f"'.', '-'; starting and ending with a letter or digit); fix the bucket part of the URI"
        )
    if require_key and not key:
        raise StorageError(f"{uri!r}: S3 URI names a bucket but no object key; {example}")
    if len(key.encode("utf-8")) > 1024:
        raise StorageError(f"{uri[:80]!r}...: object key is longer than S3's 1024-byte limit; use a shorter key")
    return bucket, key


def s3_uri(bucket: str, key: str = "") -> str:
    return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


def _join(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix else rel


_UNSAFE_CHARS = re.compile(r"[^\w.+=@,-]")
_MAX_NAME_BYTES = 200


def _clip(name: str, limit: int = _MAX_NAME_BYTES) -> str:
    if len(name.encode("utf-8")) <= limit:
        return name
    _, dot, ext = name.rpartition(".")
    ext = f".{ext}" if dot and len(ext) <= 16 else ""
    stem = name[: len(name) - len(ext)]
    while len((stem + ext).encode("utf-8")) > limit:
        stem = stem[:-1]
    return stem + ext


def local_target(workdir: Path, bucket: str, key: str) -> Path:
    """Where the object ``bucket/key`` is downloaded in ``workdir``: ``WORKDIR/s3/BUCKET/<key>``.

    The key is split on ``/`` and ``\\``; empty, ``.`` and ``..`` components are dropped.
    Folder components keep letters, digits and ``._-+=@,`` (others become ``_``); the
    **file name is kept as the studio wrote it** (spaces, quotes, any script), unless it
    holds control characters or is too long, so reports, EDLs and logs show the real
    name.  When cleaning changed the key, a folder named after a short hash of the
    original key is added before the file name, so two different keys never share a
    file.  The resolved path is checked to lie inside ``workdir`` (a symlink in the
    work folder cannot redirect it either).
    """
    parts = [p for p in re.split(r"[/\\]", key) if p and p.strip(".")]
    if not parts:
        raise StorageError(
            f"{s3_uri(bucket, key)!r}: cannot derive a local file name from key {key!r} (nothing is left once "
            f"'.', '..' and separators are removed); give an object key with a file name"
        )
    name = parts[-1]
    if any(ord(c) < 32 or c == "\x7f" for c in name) or len(name.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
        name = _clip(_UNSAFE_CHARS.sub("_", name))
    clean = [_clip(_UNSAFE_CHARS.sub("_", p)) for p in parts[:-1]] + [name]
    if "/".join(clean) != key:
        clean.insert(len(clean) - 1, "_" + hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:8])
    root = Path(workdir).resolve()
    target = root.joinpath("s3", bucket, *clean)
    resolved = target.resolve()
    if not resolved.is_relative_to(root):
        raise StorageError(
            f"{s3_uri(bucket, key)!r}: local file {resolved} would lie outside the work folder {root} "
            f"(a symlink in the work folder?); remove the link or use another work folder"
        )
    return resolved


# --------------------------------------------------------------------------- checksums


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def file_digests(path: Path, part_size: int | None = None) -> dict[str, Any]:
    """One read of ``path``: size, sha256 and md5 (hex and raw), and per-part digests when ``part_size``."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    part_sha: list[bytes] = []
    part_md5: list[bytes] = []
    size = 0
    block = 4 * MiB if not part_size else min(4 * MiB, part_size)
    cur_sha, cur_md5, cur_len = hashlib.sha256(), hashlib.md5(), 0
    with open(path, "rb") as fh:
        while True:
            want = block if not part_size else min(block, part_size - cur_len)
            chunk = fh.read(want)
            if not chunk:
                break
            size += len(chunk)
            sha.update(chunk)
            md5.update(chunk)
            if part_size:
                cur_sha.update(chunk)
                cur_md5.update(chunk)
                cur_len += len(chunk)
                if cur_len == part_size:
                    part_sha.append(cur_sha.digest())
                    part_md5.append(cur_md5.digest())
                    cur_sha, cur_md5, cur_len = hashlib.sha256(), hashlib.md5(), 0
    if part_size and cur_len:
        part_sha.append(cur_sha.digest())
        part_md5.append(cur_md5.digest())
    return {"size": size, "sha256": sha.hexdigest(), "sha256_b64": _b64(sha.digest()), "md5": md5.hexdigest(),
            "part_sha256": part_sha, "part_md5": part_md5}


def _parts_suffix(value: str | None) -> int | None:
    if value and re.fullmatch(r".+-\d+", value):
        return int(value.rsplit("-", 1)[1])
    return None


def parts_count(head: dict[str, Any]) -> int | None:
    """Number of parts of a multipart object, from its ETag or composite checksum (None: single part)."""
    for value in (head.get("ETag", "").strip('"'), head.get("ChecksumSHA256")):
        n = _parts_suffix(value)
        if n is not None:
            return n
    return head.get("PartsCount")


def verify_file(uri: str, path: Path, head: dict[str, Any], part_size: int | None = None) -> str:
    """Check ``path`` against the HeadObject answer ``head``; return the check used.

    ``"sha256"`` (whole-object checksum), ``"sha256-composite"`` (per-part checksum
    of a multipart object; needs ``part_size``), ``"md5"`` (single-part ETag),
    ``"md5-multipart"`` (``md5-N`` ETag; needs ``part_size``) or ``"size"`` when no
    digest can be recomputed.  A mismatch raises StorageError naming the URI, the
    expected and the actual value.
    """
    size = path.stat().st_size
    want_size = int(head["ContentLength"])
    if size != want_size:
        raise StorageError(f"{uri}: downloaded {size} bytes, expected {want_size} (S3 ContentLength); the object may "
                           f"have changed during the download, or the transfer was corrupted; run again")
    n_parts = parts_count(head)
    multipart = n_parts is not None and n_parts > 1
    d = file_digests(path, part_size if multipart else None)
    layout_ok = multipart and part_size is not None and len(d["part_md5"]) == n_parts

    def mismatch(what: str, expected: str, got: str) -> StorageError:
        return StorageError(f"{uri}: {what} mismatch: expected {expected}, got {got}; the download is corrupt or "
                            f"the object changed while it was read; the partial file was removed; run again")

    checksum = head.get("ChecksumSHA256")
    if checksum:
        value, _, suffix = checksum.partition("-")
        if value == d["sha256_b64"]:
            return "sha256"
        if layout_ok:
            composite = _b64(hashlib.sha256(b"".join(d["part_sha256"])).digest())
            if value == composite:
                return "sha256-composite"
            raise mismatch("SHA-256 checksum", checksum, f"{d['sha256_b64']} (whole) / {composite}-{n_parts} (parts)")
        if not multipart or head.get("ChecksumType") == "FULL_OBJECT":
            raise mismatch("SHA-256 checksum", checksum, d["sha256_b64"])
        # composite checksum of a multipart object whose part layout is unknown: try the ETag below
    etag = head.get("ETag", "").strip('"')
    encrypted = head.get("ServerSideEncryption") in ("aws:kms", "aws:kms:dsse") or head.get("SSECustomerAlgorithm")
    if etag and not encrypted:
        if re.fullmatch(r"[0-9a-f]{32}", etag):
            if etag != d["md5"]:
                raise mismatch("MD5 (ETag)", etag, d["md5"])
            return "md5"
        if layout_ok and re.fullmatch(r"[0-9a-f]{32}-\d+", etag):
            got = f"{hashlib.md5(b''.join(d['part_md5'])).hexdigest()}-{n_parts}"
            if etag != got:
                raise mismatch("multipart ETag", etag, got)
            return "md5-multipart"
    log.info("%s: no checksum that can be recomputed (ETag %s); only the size was verified", uri, etag or "-")
    return "size"


# --------------------------------------------------------------------------- the backend


class S3Storage(Storage):
    """S3 (or an S3-compatible store) behind the :class:`Storage` interface."""

    scheme = "s3"

    def __init__(self, client: Any = None, *, endpoint_url: str | None = None, multipart_threshold: int | None = None,
                 multipart_chunksize: int | None = None, max_concurrency: int | None = None) -> None:
        self._client = client
        self._endpoint_url = endpoint_url
        self._lock = threading.Lock()
        self.transfer = transfer_config(multipart_threshold, multipart_chunksize, max_concurrency)

    # ---- plumbing

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = s3_client(self._endpoint_url)
            return self._client

    @property
    def endpoint(self) -> str:
        return str(self.client.meta.endpoint_url)

    def _error(self, exc: BaseException, uri: str, doing: str) -> StorageError:
        """A StorageError that says what failed, where, and what to check."""
        bucket = uri[5:].split("/", 1)[0] if uri.startswith("s3://") else "?"
        where = f"bucket {bucket!r} at endpoint {self.endpoint}"
        while isinstance(exc, RetriesExceededError) and getattr(exc, "last_exception", None) is not None:
            exc = exc.last_exception
        if isinstance(exc, BotoConnectionError):
            return StorageError(f"{uri}: cannot reach {where} while {doing}: {exc}; check {ENV_ENDPOINT} "
                                f"(or AWS_ENDPOINT_URL), the network, and that the store is running")
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return StorageError(f"{uri}: no usable AWS credentials while {doing}: {exc}; set AWS_ACCESS_KEY_ID and "
                                f"AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an instance/task role")
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            detail = f"{code}: {err.get('Message', '')}".strip(": ")
            if code in _ACCESS_CODES:
                return StorageError(f"{uri}: access denied to {where} while {doing} ({detail}); check the credentials "
                                    f"(AWS_ACCESS_KEY_ID / AWS_PROFILE), the bucket policy, and {ENV_ENDPOINT} "
                                    f"(without s3:ListBucket, S3 also answers 403 for a missing object)")
            if code == "NoSuchBucket":
                return StorageError(f"{uri}: {where} does not exist ({doing}); check the bucket name in the URI "
                                    f"and {ENV_ENDPOINT}")
            if code in ("NoSuchKey", "404", "NotFound"):
                return StorageError(f"{uri}: no such object in {where} ({doing}); check the key, e.g. with "
                                    f"`aws s3 ls {uri.rsplit('/', 1)[0]}/`")
            if code in _THROTTLE_CODES:
                return StorageError(f"{uri}: {where} is throttling requests ({detail}) while {doing}, even after "
                                    f"retries; run again later or raise DUB_S3_MAX_ATTEMPTS")
            return StorageError(f"{uri}: {doing} failed at {where} (HTTP {status}, {detail}); check the URI, "
                                f"the credentials and {ENV_ENDPOINT}")
        return StorageError(f"{uri}: {doing} failed at {where}: {type(exc).__name__}: {exc}; check the URI, "
                            f"the credentials and {ENV_ENDPOINT}")

    def _bucket_missing(self, bucket: str) -> bool:
        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            return str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchBucket", "NotFound")
        except S3_ERRORS:
            return False
        return False

    def _not_found(self, exc: ClientError, bucket: str, uri: str, doing: str) -> StorageError:
        if self._bucket_missing(bucket):
            return StorageError(f"{uri}: bucket {bucket!r} does not exist at endpoint {self.endpoint} ({doing}); "
                                f"check the bucket name in the URI and {ENV_ENDPOINT}")
        return self._error(exc, uri, doing)

    def head(self, uri: str, doing: str = "reading the object's metadata") -> dict[str, Any]:
        """HeadObject (with checksums) of ``uri``; StorageError if missing or unreachable."""
        bucket, key = parse_s3_uri(uri)
        try:
            return self.client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if _is_404(exc):
                raise self._not_found(exc, bucket, uri, doing) from exc
            raise self._error(exc, uri, doing) from exc
        except S3_ERRORS as exc:
            raise self._error(exc, uri, doing) from exc

    # ---- reading

    def exists(self, uri: str) -> bool:
        """True if ``uri`` is an object, or a prefix with objects under it (a "folder").

        False only on a clean "not found"; an unreachable endpoint, a missing bucket or
        refused credentials raise StorageError.
        """
        bucket, key = parse_s3_uri(uri, require_key=False)
        try:
            if key and not key.endswith("/"):
                try:
                    self.client.head_object(Bucket=bucket, Key=key)
                    return True
                except ClientError as exc:
                    if not _is_404(exc):
                        raise
            prefix = key if not key or key.endswith("/") else key + "/"
            answer = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
            return bool(answer.get("KeyCount") or answer.get("Contents"))
        except S3_ERRORS as exc:
            raise self._error(exc, uri, "checking whether it exists") from exc

    def local_path(self, uri: str, workdir: Path) -> Path:
        """Download ``uri`` into ``workdir`` (verified; reused if the same ETag is already there)."""
        bucket, key = parse_s3_uri(uri)
        workdir = Path(workdir)
        target = local_target(workdir, bucket, key)
        head = self.head(uri, "downloading")
        etag = head.get("ETag", "").strip('"')
        size = int(head["ContentLength"])
        meta_path = workdir.resolve() / "s3" / CACHE_DIR / (hashlib.sha1(uri.encode("utf-8")).hexdigest()[:24] + ".json")
        if _cache_hit(meta_path, uri, etag, size, target):
            log.info("%s: reusing %s (same ETag)", uri, target)
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name[:80]}.", suffix=".partial", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            self._download(bucket, key, tmp, head)
            part_size = self._part_size(bucket, key, head) if (parts_count(head) or 1) > 1 else None
            check = verify_file(uri, tmp, head, part_size)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        st = target.stat()
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps({"uri": uri, "etag": etag, "size": size, "path": str(target),
                                         "mtime_ns": st.st_mtime_ns, "verified": check}), encoding="utf-8")
        log.info("%s: downloaded to %s (%d bytes, verified by %s)", uri, target, size, check)
        return target

    def _download(self, bucket: str, key: str, dest: Path, head: dict[str, Any]) -> None:
        """Write the object's bytes into ``dest`` (pinned to the version HeadObject saw, if versioned)."""
        uri = s3_uri(bucket, key)
        extra = {"VersionId": head["VersionId"]} if head.get("VersionId") not in (None, "null") else {}
        try:
            with open(dest, "wb") as fh, create_transfer_manager(self.client, self.transfer) as tm:
                tm.download(bucket, key, fh, extra_args=extra).result()
        except ClientError as exc:
            if _is_404(exc):
                raise self._not_found(exc, bucket, uri, "downloading") from exc
            raise self._error(exc, uri, "downloading") from exc
        except S3_ERRORS as exc:
            raise self._error(exc, uri, "downloading") from exc

    def _part_size(self, bucket: str, key: str, head: dict[str, Any]) -> int | None:
        """The part size of a multipart object if its parts are uniform (all but the last), else None."""
        n = parts_count(head) or 1
        size = int(head["ContentLength"])
        extra = {"VersionId": head["VersionId"]} if head.get("VersionId") not in (None, "null") else {}
        try:
            first = int(self.client.head_object(Bucket=bucket, Key=key, PartNumber=1, **extra)["ContentLength"])
            last = int(self.client.head_object(Bucket=bucket, Key=key, PartNumber=n, **extra)["ContentLength"])
        except S3_ERRORS as exc:
            log.info("s3://%s/%s: part sizes not available (%s); only the size can be verified", bucket, key, exc)
            return None
        if first > 0 and 0 < last <= first and (n - 1) * first + last == size:
            return first
        log.info("s3://%s/%s: parts are not uniform; only the size can be verified", bucket, key)
        return None

    def read_bytes(self, uri: str) -> bytes:
        bucket, key = parse_s3_uri(uri)
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except S3_ERRORS as exc:
            raise self._error(exc, uri, "reading") from exc

    def list(self, prefix_uri: str) -> list[str]:
        """URIs of every object whose key starts with the key of ``prefix_uri``, sorted."""
        bucket, prefix = parse_s3_uri(prefix_uri, require_key=False)
        try:
            return [s3_uri(bucket, k) for k in sorted(self._keys(bucket, prefix))]
        except S3_ERRORS as exc:
            raise self._error(exc, prefix_uri, "listing") from exc

    def _keys(self, bucket: str, prefix: str) -> Iterable[str]:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", ()):
                yield obj["Key"]

    # ---- writing

    def put_file(self, path: Path, uri: str) -> dict[str, Any]:
        """Upload one local file (multipart when large, SHA-256 checksummed); ``{"key", "size", "sha256"}``."""
        bucket, key = parse_s3_uri(uri)
        return self._upload_many(bucket, [(Path(path), key)], uri)[0]

    def write_bytes(self, uri: str, data: bytes, content_type: str | None = None) -> None:
        bucket, key = parse_s3_uri(uri)
        extra = {"ContentType": content_type} if content_type else {}
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=data, ChecksumAlgorithm="SHA256", **extra)
        except S3_ERRORS as exc:
            raise self._error(exc, uri, "writing") from exc

    def _upload_many(self, bucket: str, items: list[tuple[Path, str]], uri: str) -> list[dict[str, Any]]:
        """Hash then upload ``(local path, key)`` pairs concurrently; records in the same order."""
        workers = min(8, max(1, len(items)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            digests = list(pool.map(lambda item: file_digests(item[0]), items))
        try:
            with create_transfer_manager(self.client, self.transfer) as tm:
                futures = []
                for path, key in items:
                    extra = {"ChecksumAlgorithm": "SHA256"}
                    ctype = mimetypes.guess_type(path.name)[0]
                    if ctype:
                        extra["ContentType"] = ctype
                    futures.append(tm.upload(str(path), bucket, key, extra_args=extra))
                for f in futures:
                    f.result()
        except S3_ERRORS as exc:
            raise self._error(exc, uri, "uploading") from exc
        return [{"key": key, "size": d["size"], "sha256": d["sha256"]} for (_, key), d in zip(items, digests)]

    def _copy_many(self, bucket: str, pairs: list[tuple[str, str]], uri: str) -> None:
        """Server-side copies ``(source key, destination key)`` in one bucket (multipart when large)."""
        try:
            with create_transfer_manager(self.client, self.transfer) as tm:
                futures = [tm.copy({"Bucket": bucket, "Key": src}, bucket, dst, extra_args={"ChecksumAlgorithm": "SHA256"})
                           for src, dst in pairs]
                for f in futures:
                    f.result()
        except S3_ERRORS as exc:
            raise self._error(exc, uri, "copying staged files into place") from exc

    def _delete_keys(self, bucket: str, keys: list[str], uri: str) -> None:
        try:
            for i in range(0, len(keys), 1000):
                batch = [{"Key": k} for k in keys[i : i + 1000]]
                answer = self.client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
                if answer.get("Errors"):
                    first = answer["Errors"][0]
                    raise StorageError(f"{uri}: could not delete {len(answer['Errors'])} object(s), e.g. "
                                       f"{first.get('Key')!r}: {first.get('Code')} {first.get('Message')}; "
                                       f"check the credentials allow s3:DeleteObject")
        except S3_ERRORS as exc:
            raise self._error(exc, uri, "deleting objects") from exc

    def _delete_prefix(self, bucket: str, prefix: str, uri: str) -> int:
        """Delete every object under ``prefix`` (which must end with '/') and abort its multipart uploads."""
        assert prefix.endswith("/"), prefix
        try:
            keys = list(self._keys(bucket, prefix))
            self._delete_keys(bucket, keys, uri)
            uploads = self.client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
            for up in uploads:
                self.client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
        except S3_ERRORS as exc:
            raise self._error(exc, uri, "deleting the staging prefix") from exc
        return len(keys)

    # ---- publishing

    def stage(self, dest: str) -> "S3Staging":
        """A local staging folder for outputs published at ``dest`` (an s3:// prefix) on commit.

        Checks first that the bucket is reachable, so that a wrong endpoint or bucket
        fails before the run rather than at its end.
        """
        bucket, _ = parse_s3_uri(dest, require_key=False)
        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if _is_404(exc):
                raise StorageError(f"{dest}: bucket {bucket!r} does not exist at endpoint {self.endpoint}; create "
                                   f"it or fix the bucket name in the URI and {ENV_ENDPOINT}") from exc
            if str(exc.response.get("Error", {}).get("Code")) not in _ACCESS_CODES:
                raise self._error(exc, dest, "checking the destination bucket") from exc
            log.warning("%s: cannot check bucket %s (no s3:ListBucket?); going on", dest, bucket)
        except S3_ERRORS as exc:
            raise self._error(exc, dest, "checking the destination bucket") from exc
        return S3Staging(self, dest)

    def is_published(self, uri: str) -> bool:
        """True when ``uri`` (a destination prefix) holds a ``_SUCCESS`` marker."""
        bucket, prefix = parse_s3_uri(uri, require_key=False)
        return self.exists(s3_uri(bucket, _join(prefix.rstrip("/"), SUCCESS_NAME)))

    def read_success(self, uri: str) -> dict[str, Any]:
        """The ``_SUCCESS`` document of a published destination; StorageError if not published."""
        bucket, prefix = parse_s3_uri(uri, require_key=False)
        marker = s3_uri(bucket, _join(prefix.rstrip("/"), SUCCESS_NAME))
        try:
            raw = self.client.get_object(Bucket=bucket, Key=_join(prefix.rstrip("/"), SUCCESS_NAME))["Body"].read()
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("NoSuchKey", "404"):
                raise StorageError(f"{uri}: not published (no {SUCCESS_NAME}); the run writing it has not completed, "
                                   f"or failed; run it (again)") from exc
            raise self._error(exc, marker, "reading the success marker") from exc
        except S3_ERRORS as exc:
            raise self._error(exc, marker, "reading the success marker") from exc
        try:
            data = json.loads(raw)
            return schema.check_versioned(data, SUCCESS_KIND, marker)
        except (ValueError, schema.SchemaError) as exc:
            raise StorageError(f"{marker}: not a valid success marker ({exc}); publish the location again") from exc


def _is_404(exc: ClientError) -> bool:
    err = exc.response.get("Error", {})
    return str(err.get("Code")) in ("404", "NoSuchKey", "NotFound", "NoSuchBucket") or \
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404


def _cache_hit(meta_path: Path, uri: str, etag: str, size: int, target: Path) -> bool:
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        st = target.stat()
    except (OSError, ValueError):
        return False
    return (bool(etag) and meta.get("uri") == uri and meta.get("etag") == etag and meta.get("size") == size
            and st.st_size == size and meta.get("mtime_ns") == st.st_mtime_ns and meta.get("path") == str(target))


class S3Staging(Staging):
    """Outputs go to a local temp folder; :meth:`commit` publishes them under ``dest`` (see the module doc)."""

    def __init__(self, storage: S3Storage, dest: str) -> None:
        self.storage = storage
        self.bucket, key = parse_s3_uri(dest, require_key=False)
        self.prefix = key.rstrip("/")
        self.dest = s3_uri(self.bucket, self.prefix)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.run_id = f"{stamp}-{uuid.uuid4().hex[:8]}"
        self.staging_prefix = _join(self.prefix, f"{STAGING_PREFIX}{self.run_id}") + "/"
        staging_dir = os.environ.get("DUB_S3_STAGING_DIR") or None
        if staging_dir:
            Path(staging_dir).mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="dub-film-s3-stage-", dir=staging_dir))
        #: ``{"key", "size", "sha256"}`` of every published file (``key`` relative to ``dest``), after commit.
        self.uploaded: list[dict[str, Any]] = []
        self.state = "open"

    def _files(self) -> list[tuple[str, Path]]:
        files = []
        for path in sorted(self.root.rglob("*")):
            if path.is_file():
                rel = path.relative_to(self.root).as_posix()
                if rel == SUCCESS_NAME or rel.startswith(STAGING_PREFIX):
                    raise StorageError(f"{self.dest}: the run wrote {rel!r}, a name reserved for publication; "
                                       f"rename that output")
                files.append((rel, path))
        return files

    def commit(self) -> str:
        if self.state != "open":
            raise StorageError(f"{self.dest}: this staging area is already {self.state}; open a new one with stage()")
        st = self.storage
        success_key = _join(self.prefix, SUCCESS_NAME)
        files = self._files()
        try:
            # 1. everything to the private staging prefix
            staged = st._upload_many(self.bucket, [(p, self.staging_prefix + rel) for rel, p in files], self.dest)
            # 2. unpublish: the old marker goes before anything under DEST changes
            previous = self._previous_files(success_key)
            if previous is not None:
                st._delete_keys(self.bucket, [success_key], self.dest)
            # 3. into place
            st._copy_many(self.bucket, [(self.staging_prefix + rel, _join(self.prefix, rel)) for rel, _ in files],
                          self.dest)
            # 4. files the previous run published and this one did not
            new = {rel for rel, _ in files}
            stale = sorted(rel for rel in (previous or ()) if rel not in new)
            if stale:
                st._delete_keys(self.bucket, [_join(self.prefix, rel) for rel in stale], self.dest)
            # 5. the marker, last
            records = [{"key": rel, "size": r["size"], "sha256": r["sha256"]} for (rel, _), r in zip(files, staged)]
            doc = schema.versioned(SUCCESS_KIND, {
                "files": records, "run": self.run_id,
                "completed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            })
            st.write_bytes(s3_uri(self.bucket, success_key), (json.dumps(doc, indent=2) + "\n").encode("utf-8"),
                           content_type="application/json")
        except BaseException:
            self._drop_staging_quietly()  # the local folder stays: commit() may be retried, abort() removes it
            raise
        self.uploaded = records
        # 6. clean up (published already: a failure here only leaves garbage in the staging prefix)
        self._drop_staging_quietly()
        shutil.rmtree(self.root, ignore_errors=True)
        self.state = "committed"
        return self.dest

    def _previous_files(self, success_key: str) -> list[str] | None:
        """Relative keys listed by an existing ``_SUCCESS`` ([] if unreadable), or None when there is none."""
        try:
            doc = self.storage.read_success(self.dest)
        except StorageError as exc:
            if not self.storage.exists(s3_uri(self.bucket, success_key)):
                return None
            log.warning("%s: existing %s is unreadable (%s); replacing it", self.dest, SUCCESS_NAME, exc)
            return []
        keys = []
        for f in doc.get("files", []):
            rel = f.get("key") if isinstance(f, dict) else None
            parts = PurePosixPath(rel).parts if isinstance(rel, str) else ()
            if parts and ".." not in parts and not rel.startswith("/") and rel != SUCCESS_NAME \
                    and not rel.startswith(STAGING_PREFIX):
                keys.append(rel)
        return keys

    def _drop_staging_quietly(self) -> None:
        try:
            self.storage._delete_prefix(self.bucket, self.staging_prefix, self.dest)
        except StorageError as exc:
            log.warning("%s: could not delete the staging prefix %s: %s", self.dest, self.staging_prefix, exc)

    def abort(self) -> None:
        """Delete this run's staging prefix and local folder; nothing else is touched."""
        if self.state == "committed":
            return
        try:
            self.storage._delete_prefix(self.bucket, self.staging_prefix, self.dest)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.state = "aborted"


# --------------------------------------------------------------------------- readers


def is_published(uri: str, storage: S3Storage | None = None) -> bool:
    """True when the destination ``uri`` has a ``_SUCCESS`` marker (the readers' rule)."""
    return (storage or S3Storage()).is_published(uri)


def read_success(uri: str, storage: S3Storage | None = None) -> dict[str, Any]:
    """The ``_SUCCESS`` document of the published destination ``uri``."""
    return (storage or S3Storage()).read_success(uri)
