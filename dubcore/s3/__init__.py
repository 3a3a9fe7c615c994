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

Errors are typed (:mod:`dubcore.s3.errors`): every failure is an :class:`S3Error` (a
:class:`~dubcore.storage.StorageError`) whose class says its kind -- :class:`S3NotFound`,
:class:`S3AccessDenied`, :class:`S3Throttled`, :class:`S3ConnectionError`... -- and
whether trying again may help (:class:`S3Transient`, a
:class:`~dubcore.storage.TransientStorageError`); the message says what failed, where,
and what to check.

Layout: :mod:`.config` (clients and transfer settings), :mod:`.uri` (URIs and local
names), :mod:`.checksums`, :mod:`.backend` (:class:`S3Storage` and the readers),
:mod:`.publish` (:class:`S3Staging`) and :mod:`.errors`; every name is re-exported here.
"""

from __future__ import annotations

from .backend import CACHE_DIR, S3Storage, is_published, read_success
from .checksums import file_digests, parts_count, verify_file
from .config import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MULTIPART_THRESHOLD,
    DEFAULT_RETRY_MODE,
    ENV_ENDPOINT,
    MIN_PART_SIZE,
    MiB,
    endpoint_url_from_env,
    s3_client,
    transfer_config,
)
from .errors import (
    S3_ERRORS,
    S3AccessDenied,
    S3ChecksumMismatch,
    S3ConnectionError,
    S3CredentialsError,
    S3Error,
    S3NoSuchBucket,
    S3NotFound,
    S3NotPublished,
    S3RequestError,
    S3ServerError,
    S3Throttled,
    S3Transient,
    S3UsageError,
)
from .publish import STAGING_PREFIX, SUCCESS_KIND, SUCCESS_NAME, S3Staging
from .uri import local_target, parse_s3_uri, s3_uri

__all__ = [
    "CACHE_DIR",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MULTIPART_THRESHOLD",
    "DEFAULT_RETRY_MODE",
    "ENV_ENDPOINT",
    "MIN_PART_SIZE",
    "MiB",
    "S3_ERRORS",
    "STAGING_PREFIX",
    "SUCCESS_KIND",
    "SUCCESS_NAME",
    "S3AccessDenied",
    "S3ChecksumMismatch",
    "S3ConnectionError",
    "S3CredentialsError",
    "S3Error",
    "S3NoSuchBucket",
    "S3NotFound",
    "S3NotPublished",
    "S3RequestError",
    "S3ServerError",
    "S3Staging",
    "S3Storage",
    "S3Throttled",
    "S3Transient",
    "S3UsageError",
    "endpoint_url_from_env",
    "file_digests",
    "is_published",
    "local_target",
    "parse_s3_uri",
    "parts_count",
    "read_success",
    "s3_client",
    "s3_uri",
    "transfer_config",
    "verify_file",
]
