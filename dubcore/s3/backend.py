"""The ``s3://`` storage backend: :class:`S3Storage`, and the readers of published destinations."""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

from boto3.s3.transfer import create_transfer_manager
from botocore.exceptions import (
    ClientError,
    ConnectionError as BotoConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)
from s3transfer.exceptions import RetriesExceededError

from dubcore import schema
from dubcore.storage import Storage

from .checksums import file_digests, parts_count, verify_file
from .config import ENV_ENDPOINT, s3_client, transfer_config
from .errors import (
    _ACCESS_CODES,
    S3_ERRORS,
    S3AccessDenied,
    S3ConnectionError,
    S3CredentialsError,
    S3Error,
    S3NoSuchBucket,
    S3NotFound,
    S3NotPublished,
    S3Throttled,
    error_class,
    exception_class,
)
from .publish import SUCCESS_KIND, SUCCESS_NAME, S3Staging
from .uri import _join, local_target, parse_s3_uri, s3_uri

log = logging.getLogger(__package__)  # one logger, "dubcore.s3", for the whole package

CACHE_DIR = ".cache"  # under WORKDIR/s3/; bucket names cannot start with a dot


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

    def _error(self, exc: BaseException, uri: str, doing: str) -> S3Error:
        """An :class:`S3Error` of the failure's kind that says what failed, where, and what to check."""
        bucket = uri[5:].split("/", 1)[0] if uri.startswith("s3://") else "?"
        where = f"bucket {bucket!r} at endpoint {self.endpoint}"
        while isinstance(exc, RetriesExceededError) and getattr(exc, "last_exception", None) is not None:
            exc = exc.last_exception
        if isinstance(exc, BotoConnectionError):
            return S3ConnectionError(f"{uri}: cannot reach {where} while {doing}: {exc}; check {ENV_ENDPOINT} "
                                     f"(or AWS_ENDPOINT_URL), the network, and that the store is running")
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return S3CredentialsError(f"{uri}: no usable AWS credentials while {doing}: {exc}; set AWS_ACCESS_KEY_ID "
                                      f"and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an instance/task role")
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            detail = f"{code}: {err.get('Message', '')}".strip(": ")
            kind = error_class(code, status)
            if kind is S3AccessDenied:
                return kind(f"{uri}: access denied to {where} while {doing} ({detail}); check the credentials "
                            f"(AWS_ACCESS_KEY_ID / AWS_PROFILE), the bucket policy, and {ENV_ENDPOINT} "
                            f"(without s3:ListBucket, S3 also answers 403 for a missing object)")
            if kind is S3NoSuchBucket:
                return kind(f"{uri}: {where} does not exist ({doing}); check the bucket name in the URI "
                            f"and {ENV_ENDPOINT}")
            if kind is S3NotFound:
                return kind(f"{uri}: no such object in {where} ({doing}); check the key, e.g. with "
                            f"`aws s3 ls {uri.rsplit('/', 1)[0]}/`")
            if kind is S3Throttled:
                return kind(f"{uri}: {where} is throttling requests ({detail}) while {doing}, even after "
                            f"retries; run again later or raise DUB_S3_MAX_ATTEMPTS")
            return kind(f"{uri}: {doing} failed at {where} (HTTP {status}, {detail}); check the URI, "
                        f"the credentials and {ENV_ENDPOINT}")
        return exception_class(exc)(f"{uri}: {doing} failed at {where}: {type(exc).__name__}: {exc}; check the URI, "
                                    f"the credentials and {ENV_ENDPOINT}")

    def _bucket_missing(self, bucket: str) -> bool:
        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            return str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchBucket", "NotFound")
        except S3_ERRORS:
            return False
        return False

    def _not_found(self, exc: ClientError, bucket: str, uri: str, doing: str) -> S3Error:
        if self._bucket_missing(bucket):
            return S3NoSuchBucket(f"{uri}: bucket {bucket!r} does not exist at endpoint {self.endpoint} ({doing}); "
                                  f"check the bucket name in the URI and {ENV_ENDPOINT}")
        return self._error(exc, uri, doing)

    def head(self, uri: str, doing: str = "reading the object's metadata") -> dict[str, Any]:
        """HeadObject (with checksums) of ``uri``; an :class:`S3Error` if missing or unreachable."""
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
        refused credentials raise an :class:`S3Error`.
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
                    kind = error_class(str(first.get("Code", "")))
                    raise kind(f"{uri}: could not delete {len(answer['Errors'])} object(s), e.g. "
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
                raise S3NoSuchBucket(f"{dest}: bucket {bucket!r} does not exist at endpoint {self.endpoint}; create "
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
        """The ``_SUCCESS`` document of a published destination; :class:`S3NotPublished` if not published."""
        bucket, prefix = parse_s3_uri(uri, require_key=False)
        marker = s3_uri(bucket, _join(prefix.rstrip("/"), SUCCESS_NAME))
        try:
            raw = self.client.get_object(Bucket=bucket, Key=_join(prefix.rstrip("/"), SUCCESS_NAME))["Body"].read()
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("NoSuchKey", "404"):
                raise S3NotPublished(f"{uri}: not published (no {SUCCESS_NAME}); the run writing it has not "
                                     f"completed, or failed; run it (again)") from exc
            raise self._error(exc, marker, "reading the success marker") from exc
        except S3_ERRORS as exc:
            raise self._error(exc, marker, "reading the success marker") from exc
        try:
            data = json.loads(raw)
            return schema.check_versioned(data, SUCCESS_KIND, marker)
        except (ValueError, schema.SchemaError) as exc:
            raise S3NotPublished(f"{marker}: not a valid success marker ({exc}); publish the location again") from exc


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


# --------------------------------------------------------------------------- readers


def is_published(uri: str, storage: S3Storage | None = None) -> bool:
    """True when the destination ``uri`` has a ``_SUCCESS`` marker (the readers' rule)."""
    return (storage or S3Storage()).is_published(uri)


def read_success(uri: str, storage: S3Storage | None = None) -> dict[str, Any]:
    """The ``_SUCCESS`` document of the published destination ``uri``."""
    return (storage or S3Storage()).read_success(uri)
