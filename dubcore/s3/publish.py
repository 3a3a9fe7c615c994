"""Publication: a run's outputs staged locally, then published under a destination with ``_SUCCESS`` last.

The protocol is in the doc of :mod:`dubcore.s3`; readers use :func:`dubcore.s3.is_published`
and :func:`dubcore.s3.read_success`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from dubcore import schema
from dubcore.storage import Staging, StorageError

from .errors import S3UsageError
from .uri import _join, parse_s3_uri, s3_uri

if TYPE_CHECKING:
    from .backend import S3Storage

log = logging.getLogger(__package__)  # one logger, "dubcore.s3", for the whole package

SUCCESS_NAME = "_SUCCESS"
STAGING_PREFIX = ".staging-"
SUCCESS_KIND = "success"

# The ``_SUCCESS`` document kind.  Registered here so that this module works on its
# own; dubcore.schema.VERSIONS is the place where it belongs.
schema.VERSIONS.setdefault(SUCCESS_KIND, 1)


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
                    raise S3UsageError(f"{self.dest}: the run wrote {rel!r}, a name reserved for publication; "
                                       f"rename that output")
                files.append((rel, path))
        return files

    def commit(self) -> str:
        if self.state != "open":
            raise S3UsageError(f"{self.dest}: this staging area is already {self.state}; open a new one with stage()")
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
