"""Checksums: one read of a file for every digest S3 may hold, and the check of a download against HeadObject."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from pathlib import Path
from typing import Any

from .config import MiB
from .errors import S3ChecksumMismatch

log = logging.getLogger(__package__)  # one logger, "dubcore.s3", for the whole package


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
    digest can be recomputed.  A mismatch raises S3ChecksumMismatch naming the URI, the
    expected and the actual value.
    """
    size = path.stat().st_size
    want_size = int(head["ContentLength"])
    if size != want_size:
        raise S3ChecksumMismatch(f"{uri}: downloaded {size} bytes, expected {want_size} (S3 ContentLength); the "
                                 f"object may have changed during the download, or the transfer was corrupted; "
                                 f"run again")
    n_parts = parts_count(head)
    multipart = n_parts is not None and n_parts > 1
    d = file_digests(path, part_size if multipart else None)
    layout_ok = multipart and part_size is not None and len(d["part_md5"]) == n_parts

    def mismatch(what: str, expected: str, got: str) -> S3ChecksumMismatch:
        return S3ChecksumMismatch(f"{uri}: {what} mismatch: expected {expected}, got {got}; the download is corrupt "
                                  f"or the object changed while it was read; the partial file was removed; run again")

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
