"""S3 -> Prefect bridge: a job manifest lands in S3, a Prefect event starts the ``dub-film/gpu`` run.

S3 (or EventBridge) notifies; this bridge checks the object against the key policy and
emits one Prefect event ``s3.object.created`` whose resource carries the labels the
``gpu`` deployment's trigger matches (``dub-film.kind: job-manifest``) and templates
into the flow's ``manifest`` parameter (``s3.bucket``, ``s3.key``).

Entry points:

* ``lambda_handler(event, context)``: AWS Lambda, fed by an SQS queue (S3 -> SQS; reports
  ``batchItemFailures``), by EventBridge, or by S3 directly.
* ``consume(queue_url, ...)``: a long-running SQS consumer (long polling; a message is
  deleted only after all its objects were handled); ``once=True`` receives one batch.
* ``python -m infra.bridge.bridge --queue-url URL [--once]``: the consumer as a program.

Idempotency (S3 and SQS deliver at least once): the event id is a uuid5 of the object
*version* (bucket, key, versionId; unversioned: ETag + sequencer), so every notification
of one version maps to one event id.  Before emitting, the bridge asks Prefect whether an
event with that id exists (``POST /events/filter``; events are kept for the server's
retention period, 7 days by default) and skips it if so; Prefect itself drops a repeated
event id that arrives before it is persisted (its event bus deduplicates by id, and the
triggers service remembers seen ids for 30 minutes).  An optional local ``SeenStore``
(SQLite file for the consumer; DynamoDB in the README for Lambda) adds a record that
outlives the event retention.  See infra/bridge/README.md.

Only the standard library and boto3 (for the SQS consumer) are imported: no Prefect.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import re
import signal
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Protocol

try:
    from .keys import KeyPolicy, MalformedNotification, ObjectRef, parse_notification
except ImportError:  # a flat Lambda package: bridge.py and keys.py side by side
    from keys import KeyPolicy, MalformedNotification, ObjectRef, parse_notification  # type: ignore[no-redef]

log = logging.getLogger("dub_film.bridge")

EVENT_NAME = "s3.object.created"
RESOURCE_KIND = "job-manifest"
KIND_LABEL = "dub-film.kind"


class ConfigError(ValueError):
    """A required setting is missing or invalid."""


class EmitError(RuntimeError):
    """Prefect could not be reached or refused the request: the message must be retried."""


def _truthy(value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


# -- Prefect's events API ----------------------------------------------------------------


class PrefectEvents:
    """``POST {api}/events`` (a JSON list of events) and ``POST {api}/events/filter``, stdlib only."""

    def __init__(self, api_url: str, api_key: str | None = None, auth_string: str | None = None,
                 timeout_s: float = 15.0, retries: int = 2):
        if not api_url:
            raise ConfigError("PREFECT_API_URL is not set")
        self.api_url = api_url.rstrip("/")
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        elif auth_string:  # a self-hosted server with PREFECT_SERVER_API_AUTH_STRING
            self.headers["Authorization"] = "Basic " + base64.b64encode(auth_string.encode()).decode()
        self.timeout_s = timeout_s
        self.retries = retries

    def _post(self, route: str, body: Any) -> Any:
        data = json.dumps(body).encode()
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.api_url + route, data=data, method="POST", headers=self.headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    raw = resp.read()
                return json.loads(raw) if raw else None
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:500].decode("utf-8", "replace")
                last = EmitError(f"POST {route}: HTTP {exc.code}: {detail}")
                if exc.code < 500 and exc.code != 429:
                    raise last from None
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last = EmitError(f"POST {route}: {exc}")
            if attempt < self.retries:
                time.sleep(0.5 * 2**attempt)
        assert last is not None
        raise last

    def emit(self, events: list[dict[str, Any]]) -> None:
        self._post("/events", events)

    def exists(self, event_id: str, occurred: str) -> bool:
        """Whether Prefect has stored an event with this id (occurred within 15 days of ``occurred``)."""
        try:
            when = datetime.fromisoformat(occurred)
        except ValueError:
            when = datetime.now(timezone.utc)
        now = datetime.now(timezone.utc)
        body = {
            "filter": {
                "id": {"id": [event_id]},
                "occurred": {"since": (min(when, now) - timedelta(days=15)).isoformat(),
                             "until": (max(when, now) + timedelta(days=1)).isoformat()},
            },
            "limit": 1,
        }
        page = self._post("/events/filter", body) or {}
        return bool(page.get("events")) or bool(page.get("total"))


# -- an optional local record of emitted events ----------------------------------------


class SeenStore(Protocol):
    """A record of event ids already emitted (beyond Prefect's own, see the module docstring)."""

    def seen(self, event_id: str) -> bool: ...

    def mark(self, event_id: str, uri: str) -> None: ...


class MemorySeenStore:
    def __init__(self) -> None:
        self._ids: dict[str, str] = {}

    def seen(self, event_id: str) -> bool:
        return event_id in self._ids

    def mark(self, event_id: str, uri: str) -> None:
        self._ids[event_id] = uri


class SqliteSeenStore:
    """Event ids in a SQLite file (one consumer process, or several on one host); rows expire."""

    def __init__(self, path: str, ttl_days: float = 30.0):
        self.path = path
        self.ttl_s = ttl_days * 86400
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        with self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS seen (event_id TEXT PRIMARY KEY, uri TEXT, at REAL)")
            self._db.execute("DELETE FROM seen WHERE at < ?", (time.time() - self.ttl_s,))

    def seen(self, event_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM seen WHERE event_id = ?", (event_id,)).fetchone()
        return row is not None

    def mark(self, event_id: str, uri: str) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?, ?)", (event_id, uri, time.time()))


# -- the bridge ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    status: str  # "emitted" | "duplicate" | "rejected" | "ignored"
    bucket: str
    key: str
    event_id: str | None = None
    reason: str | None = None


@dataclass
class Stats:
    received: int = 0
    deleted: int = 0
    failed: int = 0
    emitted: int = 0
    duplicate: int = 0
    rejected: int = 0
    ignored: int = 0

    def count(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            setattr(self, o.status, getattr(self, o.status) + 1)


class Bridge:
    def __init__(self, policy: KeyPolicy, prefect: PrefectEvents, *, seen: SeenStore | None = None,
                 check_prefect: bool = True, eventbridge_keys_encoded: bool = True):
        self.policy = policy
        self.prefect = prefect
        self.seen = seen
        self.check_prefect = check_prefect
        self.eventbridge_keys_encoded = eventbridge_keys_encoded

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Bridge":
        """Settings: PREFECT_API_URL, PREFECT_API_KEY (or PREFECT_API_AUTH_STRING), DUB_BRIDGE_BUCKET
        (comma-separated), DUB_BRIDGE_PREFIX, DUB_BRIDGE_SUFFIXES, DUB_BRIDGE_SEEN_DB,
        DUB_BRIDGE_CHECK_PREFECT, DUB_BRIDGE_EVENTBRIDGE_KEYS_ENCODED (see the README)."""
        env = os.environ if env is None else env
        buckets = env.get("DUB_BRIDGE_BUCKET", "")
        if not buckets.strip():
            raise ConfigError("DUB_BRIDGE_BUCKET is not set: name the bucket(s) manifests may come from")
        policy = KeyPolicy.create(buckets, env.get("DUB_BRIDGE_PREFIX", ""),
                                  env.get("DUB_BRIDGE_SUFFIXES") or ".yaml,.yml,.json")
        prefect = PrefectEvents(env.get("PREFECT_API_URL", ""), env.get("PREFECT_API_KEY") or None,
                                env.get("PREFECT_API_AUTH_STRING") or None)
        seen_db = env.get("DUB_BRIDGE_SEEN_DB")
        return cls(policy, prefect, seen=SqliteSeenStore(seen_db) if seen_db else None,
                   check_prefect=_truthy(env.get("DUB_BRIDGE_CHECK_PREFECT"), True),
                   eventbridge_keys_encoded=_truthy(env.get("DUB_BRIDGE_EVENTBRIDGE_KEYS_ENCODED"), True))

    def build_event(self, ref: ObjectRef) -> dict[str, Any]:
        resource = {
            "prefect.resource.id": ref.resource_id(),
            "prefect.resource.name": ref.key,
            KIND_LABEL: RESOURCE_KIND,
            "s3.bucket": ref.bucket,
            "s3.key": ref.key,
            "s3.uri": ref.uri,
        }
        if ref.version_id and ref.version_id != "null":
            resource["s3.version-id"] = ref.version_id
        if ref.etag:
            resource["s3.etag"] = ref.etag
        return {
            "id": str(ref.event_id()),
            "occurred": ref.occurred(),
            "event": EVENT_NAME,
            "resource": resource,
            "related": [{"prefect.resource.id": f"s3://{ref.bucket}", "prefect.resource.role": "bucket",
                         "prefect.resource.name": ref.bucket}],
            "payload": {"uri": ref.uri, "bucket": ref.bucket, "key": ref.key, "version_id": ref.version_id,
                        "etag": ref.etag, "sequencer": ref.sequencer, "size": ref.size,
                        "notification": ref.event_name, "source": ref.source},
        }

    def handle_object(self, ref: ObjectRef) -> Outcome:
        """Emit the event for one object, unless it is not a creation, is rejected, or was emitted before.

        Raises EmitError when Prefect cannot be asked or told (the notification must be retried)."""
        if not ref.created:
            log.debug("ignored %s of s3://%s/%r", ref.event_name, ref.bucket, ref.key)
            return Outcome("ignored", ref.bucket, ref.key, reason=f"not an object creation ({ref.event_name})")
        reason = self.policy.check(ref)
        if reason:
            # %r: a hostile key must not forge log lines.
            log.warning("rejected S3 object: bucket=%r key=%r reason=%s", ref.bucket, ref.key, reason,
                        extra={"s3_bucket": ref.bucket, "s3_key": ref.key, "reason": reason})
            return Outcome("rejected", ref.bucket, ref.key, reason=reason)
        event_id = str(ref.event_id())
        if self.seen is not None and self.seen.seen(event_id):
            log.info("duplicate notification of %s (event %s, local record): skipped", ref.uri, event_id)
            return Outcome("duplicate", ref.bucket, ref.key, event_id, "in the local seen-store")
        if self.check_prefect and self.prefect.exists(event_id, ref.occurred()):
            log.info("duplicate notification of %s (event %s already in Prefect): skipped", ref.uri, event_id)
            if self.seen is not None:
                self.seen.mark(event_id, ref.uri)
            return Outcome("duplicate", ref.bucket, ref.key, event_id, "event already in Prefect")
        self.prefect.emit([self.build_event(ref)])
        if self.seen is not None:
            self.seen.mark(event_id, ref.uri)
        log.info("emitted %s for %s (event %s)", EVENT_NAME, ref.uri, event_id)
        return Outcome("emitted", ref.bucket, ref.key, event_id)

    def handle_message(self, message: Any) -> list[Outcome]:
        """All objects of one notification (dict or JSON text).  Raises MalformedNotification or EmitError."""
        refs = parse_notification(message, eventbridge_keys_encoded=self.eventbridge_keys_encoded)
        return [self.handle_object(ref) for ref in refs]


# -- AWS Lambda -----------------------------------------------------------------------------

_lambda_bridge: Bridge | None = None


def lambda_handler(event: Any, context: Any = None) -> dict[str, Any]:
    """SQS batch (S3 -> SQS): returns ``{"batchItemFailures": [...]}`` (enable ReportBatchItemFailures
    on the event source mapping); a message fails when Prefect is unreachable or it is malformed
    (so it ends in the queue's dead-letter queue).  EventBridge or S3 -> Lambda: raises on failure,
    so Lambda retries the invocation."""
    global _lambda_bridge
    if _lambda_bridge is None:
        # Our logger only: the Lambda runtime's root handler prints what reaches it.
        log.setLevel(os.environ.get("DUB_BRIDGE_LOG_LEVEL", "INFO").upper())
        _lambda_bridge = Bridge.from_env()
    bridge = _lambda_bridge
    records = event.get("Records") if isinstance(event, dict) else None
    if isinstance(records, list) and records and all(isinstance(r, dict) and r.get("eventSource") == "aws:sqs" for r in records):
        failures: list[dict[str, str]] = []
        stats = Stats(received=len(records))
        for rec in records:
            try:
                stats.count(bridge.handle_message(rec.get("body", "")))
            except MalformedNotification as exc:
                log.error("malformed SQS message %s: %s", rec.get("messageId"), exc)
                failures.append({"itemIdentifier": rec.get("messageId", "")})
            except Exception as exc:  # EmitError, or a bug: retry this message, not the batch
                log.error("SQS message %s not handled: %s", rec.get("messageId"), exc, exc_info=not isinstance(exc, EmitError))
                failures.append({"itemIdentifier": rec.get("messageId", "")})
        stats.failed = len(failures)
        log.info("batch: %s", asdict(stats))
        return {"batchItemFailures": failures}
    outcomes = bridge.handle_message(event)
    return {"outcomes": [asdict(o) for o in outcomes]}


# -- the SQS consumer -----------------------------------------------------------------------


def _region_of(queue_url: str) -> str | None:
    m = re.match(r"https://sqs[.-]([a-z0-9-]+)\.amazonaws\.com", queue_url)
    return m.group(1) if m else None


def consume(queue_url: str, *, bridge: Bridge | None = None, sqs: Any = None, once: bool = False,
            wait_time_s: int = 20, max_messages: int = 10, visibility_timeout: int | None = None,
            region: str | None = None, endpoint_url: str | None = None,
            stop: threading.Event | None = None) -> Stats:
    """Receive notifications from ``queue_url`` (long polling) and handle them until ``stop`` is set.

    A message is deleted once every object in it was emitted, found to be a duplicate, rejected
    by the key policy, or ignored; otherwise (Prefect unreachable, malformed message) it stays,
    to be received again after its visibility timeout and, with a redrive policy, to end in
    the dead-letter queue.  ``once``: a single receive call, for tests and cron-style runs."""
    bridge = bridge or Bridge.from_env()
    if sqs is None:
        import boto3

        sqs = boto3.client("sqs", region_name=region or _region_of(queue_url), endpoint_url=endpoint_url)
    stats = Stats()
    while not (stop is not None and stop.is_set()):
        request: dict[str, Any] = {"QueueUrl": queue_url, "MaxNumberOfMessages": max(1, min(10, max_messages)),
                                   "WaitTimeSeconds": max(0, min(20, wait_time_s))}
        if visibility_timeout is not None:
            request["VisibilityTimeout"] = visibility_timeout
        try:
            messages = sqs.receive_message(**request).get("Messages", [])
        except Exception as exc:  # network, throttling, credentials: back off and go on
            if once:
                raise
            log.error("receive from %s failed: %s; retrying in 5 s", queue_url, exc)
            time.sleep(5)
            continue
        done: list[dict[str, str]] = []
        for msg in messages:
            stats.received += 1
            mid = msg.get("MessageId", "?")
            try:
                stats.count(bridge.handle_message(msg.get("Body", "")))
            except MalformedNotification as exc:
                log.error("malformed message %s (left for the dead-letter queue): %s", mid, exc)
                stats.failed += 1
                continue
            except Exception as exc:
                log.error("message %s not handled, will be retried: %s", mid, exc, exc_info=not isinstance(exc, EmitError))
                stats.failed += 1
                continue
            done.append({"Id": str(len(done)), "ReceiptHandle": msg["ReceiptHandle"]})
        if done:
            resp = sqs.delete_message_batch(QueueUrl=queue_url, Entries=done)
            stats.deleted += len(resp.get("Successful", []))
            for failed in resp.get("Failed", []):
                log.error("could not delete message (it will be delivered again, and skipped): %s", failed)
        if once:
            break
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.bridge.bridge",
                                     description="S3 notifications on an SQS queue -> Prefect events that start dub-film runs.")
    parser.add_argument("--queue-url", default=os.environ.get("DUB_BRIDGE_QUEUE_URL"), help="SQS queue URL (env DUB_BRIDGE_QUEUE_URL).")
    parser.add_argument("--once", action="store_true", help="Receive one batch, handle it, exit (1 if a message failed).")
    parser.add_argument("--wait-time", type=int, default=20, help="Long-polling wait, seconds (0-20).")
    parser.add_argument("--max-messages", type=int, default=10, help="Messages per receive (1-10).")
    parser.add_argument("--visibility-timeout", type=int, default=None, help="Override the queue's visibility timeout, seconds.")
    parser.add_argument("--region", default=None, help="AWS region (default: from the queue URL or the AWS config).")
    parser.add_argument("--endpoint-url", default=None, help="SQS endpoint (default: AWS, or AWS_ENDPOINT_URL_SQS / AWS_ENDPOINT_URL).")
    parser.add_argument("--log-level", default=os.environ.get("DUB_BRIDGE_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.queue_url:
        parser.error("--queue-url (or DUB_BRIDGE_QUEUE_URL) is required")
    try:
        bridge = Bridge.from_env()
    except ConfigError as exc:
        parser.error(str(exc))
    policy = bridge.policy
    log.info("bridge: queue %s -> %s; buckets %s, prefix %r, suffixes %s", args.queue_url, bridge.prefect.api_url,
             sorted(policy.buckets), policy.prefix, list(policy.suffixes))
    stop = threading.Event()
    if not args.once:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())  # finish the batch in hand, then exit
    stats = consume(args.queue_url, bridge=bridge, once=args.once, wait_time_s=args.wait_time,
                    max_messages=args.max_messages, visibility_timeout=args.visibility_timeout,
                    region=args.region, endpoint_url=args.endpoint_url, stop=stop)
    print(json.dumps(asdict(stats)), flush=True)
    return 1 if args.once and stats.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
