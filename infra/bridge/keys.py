"""S3 notifications -> object references, the key policy, and deterministic event ids.

Standard library only: this module is packaged into the AWS Lambda beside bridge.py.

Shapes understood by :func:`parse_notification` (any of them may arrive as an SQS body):

* S3 event notification: ``{"Records": [{"eventSource": "aws:s3", "eventName":
  "ObjectCreated:Put", "s3": {"bucket": {"name"}, "object": {"key", "versionId",
  "eTag", "sequencer"}}}]}``.  The key is URL-encoded, ``+`` for a space.
* EventBridge "Object Created": ``{"source": "aws.s3", "detail-type": "Object Created",
  "detail": {"bucket": {"name"}, "object": {"key", "version-id", "etag", "sequencer"}}}``.
* Either of them wrapped by SNS (``{"Type": "Notification", "Message": "<json>"}``, or a
  Lambda ``Records[].Sns.Message``).
* ``s3:TestEvent`` (sent when a notification configuration is saved): nothing.
"""

from __future__ import annotations

import json
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable
from urllib.parse import quote, unquote_plus

# Event ids are uuid5(NAMESPACE, identity of the object version): the same object
# version always gives the same Prefect event id, whichever notification carried it.
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://dub-film/infra/bridge/s3-object-created")

DEFAULT_SUFFIXES = (".yaml", ".yml", ".json")
MAX_KEY_BYTES = 1024  # S3's own limit


class MalformedNotification(ValueError):
    """The message is not an S3 / EventBridge notification this bridge understands."""


@dataclass(frozen=True)
class ObjectRef:
    """One object named by a notification; ``key`` is decoded (the real S3 key)."""

    bucket: str
    key: str
    event_name: str  # "ObjectCreated:Put", "Object Created", "ObjectRemoved:Delete", ...
    source: str  # "s3" (S3 event notification) or "eventbridge"
    version_id: str | None = None
    etag: str | None = None
    sequencer: str | None = None
    size: int | None = None
    event_time: str | None = None
    raw_key: str | None = None  # the key as written in the notification
    key_error: str | None = None  # the key could not be decoded

    @property
    def created(self) -> bool:
        return self.event_name.startswith("ObjectCreated") or self.event_name == "Object Created"

    @property
    def uri(self) -> str:
        """``s3://bucket/key``: the value of the flow's ``manifest`` parameter."""
        return f"s3://{self.bucket}/{self.key}"

    def identity(self) -> str:
        """What makes this object *version* unique.

        Versioned bucket: bucket, key, versionId.  Unversioned: bucket, key, ETag and the
        sequencer S3 gives each PUT (a re-upload gets a new one).  A source without a
        sequencer (not AWS S3) falls back to the ETag and the event time."""
        head = f"{self.bucket}/{self.key}"
        if self.version_id and self.version_id != "null":
            return f"{head}\nversionId={self.version_id}"
        # The same PUT is spelled '617f08299329d189' or '00617F08299329D189' (S3 vs EventBridge examples).
        etag = (self.etag or "").strip('"').lower()
        if self.sequencer:
            return f"{head}\netag={etag}\nsequencer={self.sequencer.lstrip('0').upper()}"
        return f"{head}\netag={etag}\ntime={self.event_time or ''}"

    def event_id(self) -> uuid.UUID:
        return uuid.uuid5(NAMESPACE, self.identity())

    def resource_id(self) -> str:
        """``s3://bucket/key?versionId=...`` (the key percent-encoded where it must be)."""
        rid = f"s3://{self.bucket}/{quote(self.key, safe='/-_.~!$&()*+,;=:@')}"
        if self.version_id and self.version_id != "null":
            rid += f"?versionId={quote(self.version_id, safe='')}"
        return rid

    def occurred(self) -> str:
        """The notification's event time as ISO 8601 UTC, or now when it has none."""
        return _iso_time(self.event_time)


@dataclass(frozen=True)
class KeyPolicy:
    """Which objects may start a job.

    ``buckets``: allowed bucket names (empty: none allowed).  ``prefix``: the folder the
    manifests live in (``jobs/``; a trailing ``/`` is added; empty: the whole bucket).
    ``suffixes``: manifest file endings, compared case-insensitively."""

    buckets: frozenset[str]
    prefix: str = ""
    suffixes: tuple[str, ...] = DEFAULT_SUFFIXES

    @classmethod
    def create(cls, buckets: Iterable[str] | str, prefix: str = "", suffixes: Iterable[str] | str = DEFAULT_SUFFIXES) -> "KeyPolicy":
        if isinstance(buckets, str):
            buckets = buckets.split(",")
        if isinstance(suffixes, str):
            suffixes = suffixes.split(",")
        prefix = prefix.strip().lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        sufs = tuple(s.strip().lower() if s.strip().startswith(".") else "." + s.strip().lower() for s in suffixes if s.strip())
        return cls(frozenset(b.strip() for b in buckets if b.strip()), prefix, sufs or DEFAULT_SUFFIXES)

    def check(self, ref: ObjectRef) -> str | None:
        """None when ``ref`` may start a job, else the reason it may not."""
        if ref.key_error:
            return ref.key_error
        if ref.bucket not in self.buckets:
            return f"bucket {ref.bucket!r} is not allowed (allowed: {sorted(self.buckets)})"
        problem = key_problem(ref.key)
        if problem:
            return problem
        if self.prefix and not ref.key.startswith(self.prefix):
            return f"key is outside the allowed prefix {self.prefix!r}"
        if not ref.key.lower().endswith(self.suffixes):
            return f"key does not end with a manifest suffix {list(self.suffixes)}"
        name = ref.key.rsplit("/", 1)[-1]
        if name.lower() in self.suffixes:
            return "key has an empty file name"
        return None


def key_problem(key: str) -> str | None:
    """Why ``key`` is unsafe as a manifest location (relative paths resolve against its folder), or None."""
    if not key:
        return "key is empty"
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return f"key is longer than {MAX_KEY_BYTES} bytes"
    for ch in key:
        if ch == "\x00":
            return "key contains a NUL character"
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            return f"key contains a control or format character U+{ord(ch):04X}"
    if "\\" in key:
        return "key contains a backslash"
    if key.startswith("/"):
        return "key is absolute (starts with '/')"
    segments = key.split("/")
    if ".." in segments:
        return "key has a '..' segment"
    if "." in segments:
        return "key has a '.' segment"
    if "" in segments:
        return "key has an empty segment ('//' or a trailing '/')"
    return None


def decode_key(raw: str) -> tuple[str, str | None]:
    """URL-decode a notification key (``+`` is a space); ``(key, error)``."""
    try:
        return unquote_plus(raw, encoding="utf-8", errors="strict"), None
    except UnicodeDecodeError:
        return raw, "key is not valid UTF-8 once URL-decoded"


def parse_notification(message: Any, *, eventbridge_keys_encoded: bool = True) -> list[ObjectRef]:
    """The objects named by one notification (an S3 notification, an EventBridge event, an SNS
    envelope of either, given as a dict or its JSON text).  Raises MalformedNotification."""
    if isinstance(message, (str, bytes, bytearray)):
        try:
            message = json.loads(message)
        except ValueError as exc:
            raise MalformedNotification(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise MalformedNotification(f"expected a JSON object, got {type(message).__name__}")

    if message.get("Event") == "s3:TestEvent":
        return []
    if message.get("Type") == "Notification" and "Message" in message:  # SNS -> SQS envelope
        return parse_notification(message["Message"], eventbridge_keys_encoded=eventbridge_keys_encoded)
    if "detail" in message and message.get("source") == "aws.s3":
        return [_from_eventbridge(message, eventbridge_keys_encoded)]
    records = message.get("Records")
    if isinstance(records, list):
        out: list[ObjectRef] = []
        for rec in records:
            if not isinstance(rec, dict):
                raise MalformedNotification("a record is not an object")
            if "Sns" in rec:  # SNS -> Lambda
                out += parse_notification((rec.get("Sns") or {}).get("Message"), eventbridge_keys_encoded=eventbridge_keys_encoded)
            elif "s3" in rec:
                out.append(_from_s3_record(rec))
            else:
                raise MalformedNotification(f"record from {rec.get('eventSource')!r} is not an S3 record")
        return out
    raise MalformedNotification("neither S3 'Records' nor an EventBridge aws.s3 event")


def _from_s3_record(rec: dict[str, Any]) -> ObjectRef:
    try:
        s3 = rec["s3"]
        bucket = str(s3["bucket"]["name"])
        obj = s3["object"]
        raw = str(obj["key"])
    except (KeyError, TypeError):
        raise MalformedNotification("S3 record without s3.bucket.name / s3.object.key") from None
    key, err = decode_key(raw)
    return ObjectRef(
        bucket=bucket, key=key, raw_key=raw, key_error=err,
        event_name=str(rec.get("eventName", "")), source="s3",
        version_id=_opt(obj.get("versionId")), etag=_opt(obj.get("eTag") or obj.get("etag")),
        sequencer=_opt(obj.get("sequencer")), size=_int(obj.get("size")), event_time=_opt(rec.get("eventTime")),
    )


def _from_eventbridge(msg: dict[str, Any], keys_encoded: bool) -> ObjectRef:
    detail = msg.get("detail")
    try:
        bucket = str(detail["bucket"]["name"])  # type: ignore[index]
        obj = detail["object"]  # type: ignore[index]
        raw = str(obj["key"])
    except (KeyError, TypeError):
        raise MalformedNotification("EventBridge event without detail.bucket.name / detail.object.key") from None
    key, err = decode_key(raw) if keys_encoded else (raw, None)
    return ObjectRef(
        bucket=bucket, key=key, raw_key=raw, key_error=err,
        event_name=str(msg.get("detail-type", "")), source="eventbridge",
        version_id=_opt(obj.get("version-id")), etag=_opt(obj.get("etag") or obj.get("eTag")),
        sequencer=_opt(obj.get("sequencer")), size=_int(obj.get("size")), event_time=_opt(msg.get("time")),
    )


def _opt(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _iso_time(value: str | None) -> str:
    when = None
    if value:
        try:
            when = datetime.fromtimestamp(float(value), tz=timezone.utc)
        except (ValueError, OverflowError, OSError):
            try:
                when = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                when = None
    if when is None:
        when = datetime.now(timezone.utc)
    elif when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat()
