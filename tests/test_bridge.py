"""infra/bridge end to end on loopback: moto (S3 -> SQS notifications, EventBridge -> SQS), a real
Prefect server with the `gpu` deployment and its S3 trigger from prefect.yaml, and the bridge.

moto's server mode does send S3 notifications to SQS (and S3 events through EventBridge rules
to SQS targets), in the AWS formats; its S3 records carry neither `versionId` nor `sequencer`,
so the S3 -> SQS path here exercises the bridge's fallback identity (ETag + event time); the
versioned identity is checked on the AWS documentation's own examples below.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any, Callable

import pytest

from prefect_server import ROOT, free_port, prefect_server

if str(ROOT) not in sys.path:  # infra/ is not an installed package
    sys.path.insert(0, str(ROOT))

from infra.bridge import bridge as bridge_mod  # noqa: E402
from infra.bridge.bridge import Bridge, PrefectEvents, consume, lambda_handler  # noqa: E402
from infra.bridge.keys import KeyPolicy, ObjectRef, parse_notification  # noqa: E402

pytestmark = pytest.mark.slow

BUCKET = "dub-jobs"  # S3 -> SQS notifications
EB_BUCKET = "dub-jobs-eb"  # S3 -> EventBridge -> SQS
MANIFEST = b"schema: dub-film/manifest@1\nfilm: film.mp4\ndub:\n  dialogue: dialogue.wav\noutput: out/\n"


def wait_for(fn: Callable[[], Any], timeout: float, every: float = 0.5, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


# -- fixtures: moto, Prefect, the bridge ---------------------------------------------------


@pytest.fixture(scope="module")
def aws():
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with pytest.MonkeyPatch.context() as mp:
        for name in [k for k in os.environ if k.startswith("AWS_")]:
            mp.delenv(name)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        fake = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": url}
        for k, v in fake.items():
            mp.setenv(k, v)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            s3, sqs, events = (boto3.client(n) for n in ("s3", "sqs", "events"))

            def queue(name: str) -> tuple[str, str]:
                q = sqs.create_queue(QueueName=name)["QueueUrl"]
                return q, sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

            s3_queue, s3_arn = queue("dub-s3-notifications")
            eb_queue, eb_arn = queue("dub-eventbridge")
            for b in (BUCKET, EB_BUCKET):
                s3.create_bucket(Bucket=b)
                s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
            # Whole-bucket notifications: the bridge, not S3's filter, must keep other keys out.
            s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration={
                "QueueConfigurations": [{"QueueArn": s3_arn, "Events": ["s3:ObjectCreated:*"]}]})
            events.put_rule(Name="s3-object-created", EventPattern=json.dumps(
                {"source": ["aws.s3"], "detail-type": ["Object Created"], "detail": {"bucket": {"name": [EB_BUCKET]}}}))
            events.put_targets(Rule="s3-object-created", Targets=[{"Id": "queue", "Arn": eb_arn}])
            s3.put_bucket_notification_configuration(Bucket=EB_BUCKET, NotificationConfiguration={"EventBridgeConfiguration": {}})
            # Saving the configuration sends s3:TestEvent: a message the bridge acknowledges and ignores.
            [test_msg] = sqs.receive_message(QueueUrl=s3_queue, WaitTimeSeconds=2).get("Messages", [])
            assert json.loads(test_msg["Body"])["Event"] == "s3:TestEvent"
            assert parse_notification(test_msg["Body"]) == []
            sqs.delete_message(QueueUrl=s3_queue, ReceiptHandle=test_msg["ReceiptHandle"])
            yield SimpleNamespace(url=url, env=fake, s3=s3, sqs=sqs, queue=s3_queue, eb_queue=eb_queue,
                                  new_queue=lambda name: queue(name)[0])
        finally:
            server.stop()


@pytest.fixture(scope="module")
def prefect():
    """A Prefect server with `dub-film/gpu` deployed from prefect.yaml into a process pool (no worker:
    runs stay Scheduled).  The event persister flushes every second (default 5) to keep the test short."""
    with prefect_server(extra_env={"PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "1"}) as server:
        server.cli("work-pool", "create", "dub-film-gpu", "--type", "process")
        server.cli("deploy", "--name", "gpu", "--no-prompt", cwd=ROOT, timeout=300)
        deployment = server.request("GET", "/deployments/name/dub-film/gpu")
        yield SimpleNamespace(server=server, deployment_id=deployment["id"])


@pytest.fixture
def bridge_env(aws, prefect) -> dict[str, str]:
    return {"PREFECT_API_URL": prefect.server.api_url, "DUB_BRIDGE_BUCKET": f"{BUCKET},{EB_BUCKET}",
            "DUB_BRIDGE_PREFIX": "jobs/"}


@pytest.fixture
def bridge(bridge_env) -> Bridge:
    return Bridge.from_env(bridge_env)


def gpu_runs(prefect) -> list[dict[str, Any]]:
    return prefect.server.request("POST", "/flow_runs/filter",
                                  {"deployments": {"id": {"any_": [prefect.deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC"})


def stored_events(prefect, **filter_: Any) -> list[dict[str, Any]]:
    page = prefect.server.request("POST", "/events/filter", {"filter": filter_, "limit": 50})
    return page["events"]


def runs_for(prefect, uri: str) -> list[dict[str, Any]]:
    return [r for r in gpu_runs(prefect) if r["parameters"].get("manifest") == uri]


# -- end to end ----------------------------------------------------------------------------


def test_manifest_upload_starts_exactly_one_gpu_run(aws, prefect, bridge, bridge_env):
    aws.s3.put_object(Bucket=BUCKET, Key="jobs/film1.yaml", Body=MANIFEST)
    # Read the notification without consuming it (visibility 0), to deliver it again later.
    [msg] = aws.sqs.receive_message(QueueUrl=aws.queue, WaitTimeSeconds=5, VisibilityTimeout=0)["Messages"]
    body = msg["Body"]
    assert json.loads(body)["Records"][0]["s3"]["object"]["key"] == "jobs%2Ffilm1.yaml"  # URL-encoded, as S3 does
    [ref] = parse_notification(body)
    event_id = str(ref.event_id())

    t0 = time.monotonic()
    stats = consume(aws.queue, bridge=bridge, once=True, wait_time_s=2)
    assert (stats.received, stats.emitted, stats.deleted, stats.failed) == (1, 1, 1, 0), stats
    runs = wait_for(lambda: gpu_runs(prefect), 60, what="the trigger's flow run")
    first_s = time.monotonic() - t0
    assert len(runs) == 1, runs
    run = runs[0]
    assert run["parameters"] == {"manifest": f"s3://{BUCKET}/jobs/film1.yaml"}
    assert run["state"]["type"] == "SCHEDULED"  # no worker serves the pool in this test
    assert (run.get("created_by") or {}).get("type") == "AUTOMATION", run.get("created_by")

    [stored] = wait_for(lambda: stored_events(prefect, id={"id": [event_id]}), 20, what="the persisted event")
    assert stored["event"] == "s3.object.created"
    assert stored["resource"]["dub-film.kind"] == "job-manifest"
    assert stored["resource"]["s3.bucket"] == BUCKET and stored["resource"]["s3.key"] == "jobs/film1.yaml"

    # The same notification again (S3 and SQS deliver at least once), through the CLI consumer.
    aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=body)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DUB_BRIDGE_"))}
    proc = subprocess.run([sys.executable, "-m", "infra.bridge.bridge", "--queue-url", aws.queue, "--once", "--wait-time", "5"],
                          cwd=ROOT, env={**env, **aws.env, **bridge_env}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (again["received"], again["duplicate"], again["emitted"], again["deleted"]) == (1, 1, 0, 1), proc.stderr
    assert "already in Prefect" in proc.stderr

    # Even forced past the bridge's check, Prefect drops a repeated event id.
    forced = Bridge(bridge.policy, bridge.prefect, check_prefect=False)
    assert [o.status for o in forced.handle_message(body)] == ["emitted"]

    time.sleep(max(5.0, first_s + 3.0))
    assert len(gpu_runs(prefect)) == 1
    assert len(stored_events(prefect, id={"id": [event_id]})) == 1
    assert not aws.sqs.receive_message(QueueUrl=aws.queue, WaitTimeSeconds=0).get("Messages")


def test_rejected_keys_are_logged_and_emit_nothing(aws, prefect, bridge, caplog):
    before = len(gpu_runs(prefect))
    bad = {"other/x.yaml": "outside the allowed prefix", "jobs/../evil.yaml": "'..' segment",
           "jobs/notes.txt": "manifest suffix"}
    for key in bad:
        aws.s3.put_object(Bucket=BUCKET, Key=key, Body=MANIFEST)
    caplog.set_level(logging.WARNING, logger="dub_film.bridge")
    received = rejected = deleted = 0
    deadline = time.monotonic() + 20
    while received < len(bad) and time.monotonic() < deadline:
        stats = consume(aws.queue, bridge=bridge, once=True, wait_time_s=1)
        assert stats.emitted == 0 and stats.failed == 0, stats
        received, rejected, deleted = received + stats.received, rejected + stats.rejected, deleted + stats.deleted
    assert (received, rejected, deleted) == (3, 3, 3)

    warnings = [r for r in caplog.records if r.name == "dub_film.bridge" and r.levelno == logging.WARNING]
    for key, reason in bad.items():
        [rec] = [r for r in warnings if getattr(r, "s3_key", None) == key]
        assert rec.s3_bucket == BUCKET and reason in rec.reason
        assert repr(key) in rec.getMessage() and reason in rec.getMessage()

    time.sleep(2.5)  # past the event persister's flush interval (1 s here)
    keys = {e["resource"].get("s3.key") for e in stored_events(prefect, event={"name": ["s3.object.created"]})}
    assert not keys & set(bad), keys
    assert len(gpu_runs(prefect)) == before


def test_eventbridge_events_through_lambda_sqs_batch(aws, prefect, bridge_env, monkeypatch):
    aws.s3.put_object(Bucket=EB_BUCKET, Key="jobs/film2.json", Body=json.dumps({"schema": "dub-film/manifest@1"}).encode())
    [msg] = wait_for(lambda: aws.sqs.receive_message(QueueUrl=aws.eb_queue, WaitTimeSeconds=1).get("Messages"), 10,
                     what="the EventBridge message")
    assert json.loads(msg["Body"])["detail-type"] == "Object Created"
    event = {"Records": [
        {"messageId": msg["MessageId"], "body": msg["Body"], "eventSource": "aws:sqs"},
        {"messageId": "garbage-1", "body": "{not json", "eventSource": "aws:sqs"},
    ]}
    for k, v in bridge_env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(bridge_mod, "_lambda_bridge", None)
    assert lambda_handler(event, None) == {"batchItemFailures": [{"itemIdentifier": "garbage-1"}]}
    runs = wait_for(lambda: runs_for(prefect, f"s3://{EB_BUCKET}/jobs/film2.json"), 60, what="the EventBridge run")
    assert len(runs) == 1
    # A retry of the whole batch: the good message is a duplicate now, the bad one fails again.
    assert lambda_handler(event, None) == {"batchItemFailures": [{"itemIdentifier": "garbage-1"}]}
    time.sleep(3)
    assert len(runs_for(prefect, f"s3://{EB_BUCKET}/jobs/film2.json")) == 1


def test_message_stays_queued_while_prefect_is_unreachable(aws):
    queue = aws.new_queue("dub-unreachable")
    aws.sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(_s3_record("jobs/film3.yaml", "v3")))
    down = Bridge(KeyPolicy.create(BUCKET, "jobs/"), PrefectEvents(f"http://127.0.0.1:{free_port()}/api", retries=0))
    stats = consume(queue, bridge=down, once=True, wait_time_s=2, visibility_timeout=1)
    assert (stats.received, stats.failed, stats.deleted, stats.emitted) == (1, 1, 0, 0)
    assert wait_for(lambda: aws.sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages"), 10,
                    what="the message to come back")


# -- the parts, without servers --------------------------------------------------------------


def _s3_record(key: str, version: str | None = None, sequencer: str = "0055AED6DCD90281E5", bucket: str = BUCKET) -> dict:
    """An S3 -> SQS notification as in the AWS documentation (key URL-encoded by the caller)."""
    obj = {"key": key, "size": 1024, "eTag": "d41d8cd98f00b204e9800998ecf8427e", "sequencer": sequencer}
    if version:
        obj["versionId"] = version
    return {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                         "eventTime": "2024-05-01T10:00:00.000Z", "eventName": "ObjectCreated:Put",
                         "s3": {"s3SchemaVersion": "1.0", "configurationId": "jobs",
                                "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"}, "object": obj}}]}


def _eventbridge(key: str, version: str | None, sequencer: str = "617f08299329d189", bucket: str = BUCKET) -> dict:
    obj = {"key": key, "size": 1024, "etag": "d41d8cd98f00b204e9800998ecf8427e", "sequencer": sequencer}
    if version:
        obj["version-id"] = version
    return {"version": "0", "id": "17793124-05d4-b198-2fde-7ededc63b103", "detail-type": "Object Created",
            "source": "aws.s3", "account": "111122223333", "time": "2024-05-01T10:00:00Z", "region": "us-east-1",
            "resources": [f"arn:aws:s3:::{bucket}"],
            "detail": {"version": "0", "bucket": {"name": bucket}, "object": obj, "reason": "PutObject"}}


@pytest.mark.parametrize("key,reason", [
    ("other/x.yaml", "outside the allowed prefix"),
    ("jobs/../x.yaml", "'..' segment"),
    ("jobs/a/../../x.yaml", "'..' segment"),
    ("/jobs/x.yaml", "absolute"),
    ("jobs\\x.yaml", "backslash"),
    ("jobs/x\x00.yaml", "NUL"),
    ("jobs/x\x1b[31m.yaml", "control"),
    ("jobs/x\u202e.yaml", "format character"),
    ("jobs/x.txt", "manifest suffix"),
    ("jobs/x.yaml.exe", "manifest suffix"),
    ("jobs//x.yaml", "empty segment"),
    ("jobs/./x.yaml", "'.' segment"),
    ("jobs/.yaml", "empty file name"),
    ("jobsx/x.yaml", "outside the allowed prefix"),
])
def test_key_policy_rejects(key, reason):
    policy = KeyPolicy.create("dub-jobs", "jobs")
    got = policy.check(ObjectRef(bucket="dub-jobs", key=key, event_name="ObjectCreated:Put", source="s3"))
    assert got and reason in got


def test_key_policy_accepts_and_checks_the_bucket():
    policy = KeyPolicy.create("dub-jobs, other-bucket", "jobs/", ".yaml,yml,.JSON")
    for key in ("jobs/film1.yaml", "jobs/sub dir/Film 2.YML", "jobs/a+b.json"):
        assert policy.check(ObjectRef(bucket="dub-jobs", key=key, event_name="ObjectCreated:Put", source="s3")) is None
    assert "not allowed" in policy.check(ObjectRef(bucket="evil", key="jobs/x.yaml", event_name="ObjectCreated:Put", source="s3"))
    assert KeyPolicy.create("").check(ObjectRef(bucket="", key="jobs/x.yaml", event_name="x", source="s3"))  # no bucket: none allowed


def test_keys_are_url_decoded():
    [ref] = parse_notification(_s3_record("jobs/Film+1%2B2%C3%A9.yaml", "v1"))
    assert ref.key == "jobs/Film 1+2\u00e9.yaml" and ref.raw_key == "jobs/Film+1%2B2%C3%A9.yaml"
    [nul] = parse_notification(_s3_record("jobs/x%00.yaml", "v1"))
    assert "NUL" in KeyPolicy.create(BUCKET, "jobs/").check(nul)
    [bad] = parse_notification(_s3_record("jobs/x%FF.yaml", "v1"))
    assert "UTF-8" in KeyPolicy.create(BUCKET, "jobs/").check(bad)


def test_event_id_is_one_per_object_version():
    s3_v1 = parse_notification(_s3_record("jobs/film1.yaml", "v1"))[0]
    eb_v1 = parse_notification(_eventbridge("jobs/film1.yaml", "v1"))[0]
    assert s3_v1.event_id() == eb_v1.event_id()  # either notification path: one event
    assert parse_notification(json.dumps(_s3_record("jobs/film1.yaml", "v1")))[0].event_id() == s3_v1.event_id()
    assert parse_notification(_s3_record("jobs/film1.yaml", "v2"))[0].event_id() != s3_v1.event_id()
    assert parse_notification(_s3_record("jobs/film2.yaml", "v1"))[0].event_id() != s3_v1.event_id()
    # Unversioned bucket: the sequencer tells two PUTs apart, however it is spelled.
    s3_u = parse_notification(_s3_record("jobs/film1.yaml", None, "00617F08299329D189"))[0]
    eb_u = parse_notification(_eventbridge("jobs/film1.yaml", None, "617f08299329d189"))[0]
    assert s3_u.event_id() == eb_u.event_id()
    assert parse_notification(_s3_record("jobs/film1.yaml", None, "00617F0829932AAAAA"))[0].event_id() != s3_u.event_id()
    # SNS envelopes and S3 test events.
    sns = {"Type": "Notification", "Message": json.dumps(_s3_record("jobs/film1.yaml", "v1"))}
    assert parse_notification(sns)[0].event_id() == s3_v1.event_id()
    assert parse_notification({"Service": "Amazon S3", "Event": "s3:TestEvent"}) == []


def test_event_matches_prefects_schema_and_the_trigger():
    from prefect.events.schemas.events import Event, ResourceSpecification

    b = Bridge(KeyPolicy.create(BUCKET, "jobs/"), PrefectEvents("http://127.0.0.1:9/api"))
    [ref] = parse_notification(_s3_record("jobs/film+1.yaml", "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"))
    ev = Event.model_validate(b.build_event(ref))
    assert ev.event == "s3.object.created" and str(ev.id) == str(ref.event_id())
    assert ev.resource.id == f"s3://{BUCKET}/jobs/film%201.yaml?versionId=3HL4kqtJlcpXroDTDmJ%2BrmSpXd3dIbrHY"
    assert ev.resource["s3.key"] == "jobs/film 1.yaml" and ev.resource["s3.version-id"] == "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"
    # The trigger of prefect.yaml matches it.
    import yaml

    [gpu] = [d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"] if d["name"] == "gpu"]
    [trigger] = gpu["triggers"]
    assert ev.event in trigger["expect"]
    assert ResourceSpecification.model_validate(trigger["match"]).matches(ev.resource)


def test_bridge_imports_neither_prefect_nor_the_project():
    heavy = ("prefect", "torch", "lipsync", "dubcore", "tasks", "flows", "pydantic", "yaml")
    probe = ("import sys; {imp}; bad = sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})); "
             "assert not bad, bad; print('ok')")
    for cwd, imp in ((ROOT, "import infra.bridge.bridge"), (ROOT / "infra" / "bridge", "import bridge")):  # package / flat Lambda zip
        proc = subprocess.run([sys.executable, "-c", probe.format(imp=imp, heavy=heavy)],
                              cwd=cwd, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


class StubPrefect(PrefectEvents):
    """Prefect's events API in memory (``fail``: unreachable)."""

    def __init__(self, fail: bool = False):
        super().__init__("http://127.0.0.1:9/api")
        self.events: list[dict[str, Any]] = []
        self.fail = fail
        self.asked = 0

    def emit(self, events):
        if self.fail:
            raise bridge_mod.EmitError("POST /events: connection refused")
        self.events += events

    def exists(self, event_id, occurred):
        self.asked += 1
        if self.fail:
            raise bridge_mod.EmitError("POST /events/filter: connection refused")
        return any(e["id"] == event_id for e in self.events)


def test_lambda_handler_shapes_and_failures(monkeypatch):
    stub = StubPrefect()
    monkeypatch.setattr(bridge_mod, "_lambda_bridge", Bridge(KeyPolicy.create(BUCKET, "jobs/"), stub))
    # EventBridge -> Lambda, then S3 -> Lambda for the same object version: one event.
    out = lambda_handler(_eventbridge("jobs/film1.yaml", "v1"))
    assert [o["status"] for o in out["outcomes"]] == ["emitted"]
    out = lambda_handler(_s3_record("jobs/film1.yaml", "v1"))
    assert [o["status"] for o in out["outcomes"]] == ["duplicate"]
    assert len(stub.events) == 1 and stub.events[0]["resource"]["s3.version-id"] == "v1"
    deleted = {"Records": [{**_s3_record("jobs/film1.yaml", "v1")["Records"][0], "eventName": "ObjectRemoved:Delete"}]}
    assert [o["status"] for o in lambda_handler(deleted)["outcomes"]] == ["ignored"]

    # Prefect unreachable: SQS batch items fail one by one; a direct invocation raises (Lambda retries it).
    monkeypatch.setattr(bridge_mod, "_lambda_bridge", Bridge(KeyPolicy.create(BUCKET, "jobs/"), StubPrefect(fail=True)))
    batch = {"Records": [
        {"messageId": "m1", "body": json.dumps(_s3_record("jobs/film9.yaml", "v9")), "eventSource": "aws:sqs"},
        {"messageId": "m2", "body": json.dumps(_s3_record("other/x.yaml", "v1")), "eventSource": "aws:sqs"},
    ]}
    assert lambda_handler(batch) == {"batchItemFailures": [{"itemIdentifier": "m1"}]}  # m2: rejected, done
    with pytest.raises(bridge_mod.EmitError):
        lambda_handler(_eventbridge("jobs/film9.yaml", "v9"))


def test_sqlite_seen_store_outlives_the_process(tmp_path):
    from infra.bridge.bridge import SqliteSeenStore

    body = _s3_record("jobs/film1.yaml", "v1")
    first = StubPrefect()
    assert [o.status for o in Bridge(KeyPolicy.create(BUCKET, "jobs/"), first, seen=SqliteSeenStore(str(tmp_path / "seen.db"))).handle_message(body)] == ["emitted"]
    later = StubPrefect()  # e.g. Prefect's event retention has passed
    again = Bridge(KeyPolicy.create(BUCKET, "jobs/"), later, seen=SqliteSeenStore(str(tmp_path / "seen.db")))
    assert [o.status for o in again.handle_message(body)] == ["duplicate"]
    assert later.asked == 0 and later.events == []
