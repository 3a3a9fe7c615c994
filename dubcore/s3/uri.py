"""S3 URIs: parsing, building, and where an object is downloaded in the work folder."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .errors import S3UsageError


# --------------------------------------------------------------------------- URIs

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]")


def parse_s3_uri(uri: str, *, require_key: bool = True) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``("bucket", "key")``; S3UsageError naming the URI, the problem and the fix.

    With ``require_key=False`` a bare ``s3://bucket`` (or ``s3://bucket/``) gives an
    empty key (a destination at the bucket's root).
    """
    example = "write it as s3://BUCKET/path/to/object"
    if not isinstance(uri, str):
        raise S3UsageError(f"{uri!r}: an S3 URI must be a string; {example}")
    if uri != uri.strip() or any(ord(ch) < 32 or ord(ch) == 127 for ch in uri):
        raise S3UsageError(f"{uri!r}: S3 URI contains whitespace at its ends or control characters; {example}")
    if uri[:5].lower() != "s3://":
        raise S3UsageError(f"{uri!r}: not an S3 URI (it must start with 's3://'); {example}")
    bucket, sep, key = uri[5:].partition("/")
    if not bucket:
        raise S3UsageError(f"{uri!r}: S3 URI has no bucket name; {example}")
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise S3UsageError(
            f"{uri!r}: {bucket!r} is not a valid bucket name (3-63 characters: lowercase letters, digits, "
            f"'.', '-'; starting and ending with a letter or digit); fix the bucket part of the URI"
        )
    if require_key and not key:
        raise S3UsageError(f"{uri!r}: S3 URI names a bucket but no object key; {example}")
    if len(key.encode("utf-8")) > 1024:
        raise S3UsageError(f"{uri[:80]!r}...: object key is longer than S3's 1024-byte limit; use a shorter key")
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
        raise S3UsageError(
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
        raise S3UsageError(
            f"{s3_uri(bucket, key)!r}: local file {resolved} would lie outside the work folder {root} "
            f"(a symlink in the work folder?); remove the link or use another work folder"
        )
    return resolved
