"""The s3:// storage backend against a real S3 endpoint: moto's server on 127.0.0.1.

moto accepts any credentials, so "wrong credentials" is not tested here; the error
paths tested are a missing object, a missing bucket and an unreachable endpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from dubcore import s3 as s3mod
from dubcore.s3 import S3Storage, local_target, parse_s3_uri, s3_client, verify_file
from dubcore.storage import StorageError, open_storage
from s3server import closed_port_url, moto_s3

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server():
    with moto_s3() as srv:
        yield srv


@pytest.fixture(scope="module")
def storage(server) -> S3Storage:
    """Multipart from 5 MiB on (S3's minimum part size), so a 12 MiB file has 3 parts."""
    return S3Storage(server.client(), multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)


@pytest.fixture
def bucket(server) -> str:
    return server.bucket(f"dub-{uuid.uuid4().hex[:12]}")


def keys(storage: S3Storage, bucket: str, prefix: str = "") -> list[str]:
    return sorted(storage._keys(bucket, prefix))


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- URIs and setup


def test_parse_s3_uri():
    assert parse_s3_uri("s3://my-bucket/films/a.mp4") == ("my-bucket", "films/a.mp4")
    assert parse_s3_uri("S3://my.bucket/a/b/") == ("my.bucket", "a/b/")
    assert parse_s3_uri("s3://my-bucket", require_key=False) == ("my-bucket", "")


@pytest.mark.parametrize("uri, problem", [
    ("my-bucket/key", "must start with 's3://'"),
    ("s3:/my-bucket/key", "must start with 's3://'"),
    ("s3:///key", "no bucket name"),
    ("s3://my-bucket", "no object key"),
    ("s3://my-bucket/", "no object key"),
    ("s3://My_Bucket!/key", "not a valid bucket name"),
    ("s3://ab/key", "not a valid bucket name"),
    (" s3://my-bucket/key", "whitespace"),
    ("s3://my-bucket/a\nb", "control characters"),
    ("s3://my-bucket/" + "k" * 1025, "1024-byte"),
])
def test_parse_s3_uri_errors(uri, problem):
    with pytest.raises(StorageError) as err:
        parse_s3_uri(uri)
    msg = str(err.value)
    assert problem in msg and repr(uri)[:40] in msg and ("s3://BUCKET" in msg or "fix" in msg or "use" in msg)


def test_storage_module_does_not_import_boto3():
    code = "import sys, dubcore.storage as s; assert 's3' in s.BACKENDS; print('boto3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_open_storage_uses_env_endpoint(server, bucket):
    st = open_storage(f"s3://{bucket}/x")
    assert isinstance(st, S3Storage)
    assert st.endpoint == server.endpoint_url  # from DUB_S3_ENDPOINT_URL
    retries = st.client.meta.config.retries
    assert retries["mode"] in ("standard", "adaptive") and retries["total_max_attempts"] >= 2
    assert not st.exists(f"s3://{bucket}/x")


# --------------------------------------------------------------------------- round trip


def test_round_trip_multipart(storage, bucket, tmp_path, monkeypatch):
    data = os.urandom(12 * MiB)
    dest = f"s3://{bucket}/runs/film-1"
    staging = storage.stage(dest)
    (staging.root / "film").mkdir()
    (staging.root / "film" / "out.bin").write_bytes(data)
    assert staging.commit() == dest

    head = storage.client.head_object(Bucket=bucket, Key="runs/film-1/film/out.bin")
    assert head["ETag"].strip('"').endswith("-3")  # 5 + 5 + 2 MiB parts
    success = storage.read_success(dest)
    assert success["schema"] == "dub-film/success@1" and success["run"] == staging.run_id
    assert success["files"] == [{"key": "film/out.bin", "size": len(data), "sha256": sha256(data)}]
    assert staging.uploaded == success["files"]

    workdir = tmp_path / "work"
    local = storage.local_path(f"{dest}/film/out.bin", workdir)
    assert local.is_relative_to(workdir.resolve()) and local.read_bytes() == data
    meta = json.loads(next((workdir / "s3" / s3mod.CACHE_DIR).glob("*.json")).read_text())
    assert meta["verified"] in ("sha256", "sha256-composite", "md5-multipart")
    assert not [p for p in files_in(workdir) if p.name.endswith(".partial")]

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded again although the same ETag is in the work folder")

    monkeypatch.setattr(S3Storage, "_download", no_download)
    assert storage.local_path(f"{dest}/film/out.bin", workdir) == local  # cache hit


def test_download_single_part_and_cache_invalidation(storage, bucket, tmp_path):
    uri = f"s3://{bucket}/in/manifest.json"
    storage.write_bytes(uri, b'{"a": 1}')
    local = storage.local_path(uri, tmp_path)
    assert local.read_bytes() == b'{"a": 1}'
    assert storage.read_bytes(uri) == b'{"a": 1}'
    storage.write_bytes(uri, b'{"a": 2}')  # new ETag: downloaded again
    assert storage.local_path(uri, tmp_path).read_bytes() == b'{"a": 2}'


def test_put_file_records_size_and_sha256(storage, bucket, tmp_path):
    path = tmp_path / "clip.wav"
    data = os.urandom(6 * MiB)
    path.write_bytes(data)
    rec = storage.put_file(path, f"s3://{bucket}/up/clip.wav")
    assert rec == {"key": "up/clip.wav", "size": len(data), "sha256": sha256(data)}
    head = storage.client.head_object(Bucket=bucket, Key="up/clip.wav", ChecksumMode="ENABLED")
    assert head["ETag"].strip('"').endswith("-2") and head.get("ChecksumSHA256")
    assert head["ContentType"] == "audio/x-wav"


# --------------------------------------------------------------------------- corruption


@pytest.mark.parametrize("size", [100 * 1024, 7 * MiB])  # single part (MD5 / SHA-256), multipart (composite)
def test_corrupted_download_is_refused(storage, bucket, tmp_path, monkeypatch, size):
    uri = f"s3://{bucket}/in/film-{size}.bin"
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(size))
    storage.put_file(src, uri)

    def corrupt(self, bucket, key, dest, head):
        dest.write_bytes(os.urandom(int(head["ContentLength"])))  # same size, other bytes

    monkeypatch.setattr(S3Storage, "_download", corrupt)
    workdir = tmp_path / "work"
    with pytest.raises(StorageError) as err:
        storage.local_path(uri, workdir)
    msg = str(err.value)
    assert uri in msg and "expected" in msg and "got" in msg and "mismatch" in msg
    assert files_in(workdir) == []


def test_objects_without_sha256_are_verified_by_etag(storage, bucket, tmp_path, monkeypatch):
    """Objects other tools uploaded (no SHA-256 checksum): MD5 ETag, or md5-N recomputed from the part layout."""
    from boto3.s3.transfer import TransferConfig

    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(12 * MiB))
    storage.client.upload_file(str(src), bucket, "other/big.bin",
                               Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
    storage.client.put_object(Bucket=bucket, Key="other/small.bin", Body=b"abc")
    workdir = tmp_path / "work"
    for key, method in (("other/big.bin", "md5-multipart"), ("other/small.bin", "md5")):
        head = storage.client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert "ChecksumSHA256" not in head
        local = storage.local_path(f"s3://{bucket}/{key}", workdir)
        assert verify_file(key, local, head, 5 * MiB if method == "md5-multipart" else None) == method

    def corrupt(self, bucket, key, dest, head):
        dest.write_bytes(os.urandom(int(head["ContentLength"])))

    monkeypatch.setattr(S3Storage, "_download", corrupt)
    with pytest.raises(StorageError, match=r"multipart ETag mismatch: expected [0-9a-f]{32}-3, got [0-9a-f]{32}-3"):
        storage.local_path(f"s3://{bucket}/other/big.bin", tmp_path / "work2")
    assert files_in(tmp_path / "work2") == []


def test_truncated_download_is_refused(storage, bucket, tmp_path, monkeypatch):
    uri = f"s3://{bucket}/in/short.bin"
    storage.write_bytes(uri, b"x" * 1000)
    monkeypatch.setattr(S3Storage, "_download", lambda self, b, k, dest, head: dest.write_bytes(b"x" * 999))
    with pytest.raises(StorageError, match=r"999 bytes, expected 1000"):
        storage.local_path(uri, tmp_path)
    assert files_in(tmp_path) == []


def test_verify_file_against_wrong_checksums(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"hello")
    uri = "s3://bkt/f.bin"
    good_md5 = hashlib.md5(b"hello").hexdigest()
    assert verify_file(uri, path, {"ContentLength": 5, "ETag": f'"{good_md5}"'}) == "md5"
    with pytest.raises(StorageError, match="expected 0{32}, got " + good_md5):
        verify_file(uri, path, {"ContentLength": 5, "ETag": '"' + "0" * 32 + '"'})
    with pytest.raises(StorageError, match="SHA-256 checksum mismatch"):
        verify_file(uri, path, {"ContentLength": 5, "ETag": f'"{good_md5}"', "ChecksumSHA256": "AAAA"})
    # an SSE-KMS ETag is no MD5, and a multipart ETag without part layout cannot be recomputed: size only
    assert verify_file(uri, path, {"ContentLength": 5, "ETag": '"' + "0" * 32 + '"', "ServerSideEncryption": "aws:kms"}) == "size"
    assert verify_file(uri, path, {"ContentLength": 5, "ETag": '"' + "0" * 32 + '-2"'}) == "size"


# --------------------------------------------------------------------------- staging and publication


def write_outputs(root: Path, tag: bytes) -> dict[str, bytes]:
    files = {"film.mp4": b"film " + tag, "report.json": b'{"run": "%s"}' % tag, "shots/s001/shot.json": b"shot " + tag}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_staging_commit_abort_and_recommit(storage, bucket):
    dest = f"s3://{bucket}/out/film"
    staging = storage.stage(dest)
    files = write_outputs(staging.root, b"one")
    assert keys(storage, bucket) == []  # nothing reaches S3 during the run
    assert not storage.is_published(dest)
    assert staging.commit() == dest
    assert not staging.root.exists()
    assert keys(storage, bucket) == sorted(f"out/film/{k}" for k in [*files, "_SUCCESS"])
    assert storage.is_published(dest)
    listed = {f["key"]: (f["size"], f["sha256"]) for f in storage.read_success(dest)["files"]}
    assert listed == {k: (len(v), sha256(v)) for k, v in files.items()}
    for rel, data in files.items():
        assert storage.client.get_object(Bucket=bucket, Key=f"out/film/{rel}")["Body"].read() == data

    # an aborted run touches nothing published
    aborted = storage.stage(dest)
    write_outputs(aborted.root, b"aborted")
    aborted.abort()
    assert not aborted.root.exists()
    assert keys(storage, bucket) == sorted(f"out/film/{k}" for k in [*files, "_SUCCESS"])

    # a second run replaces the files, drops the one it no longer writes, keeps foreign objects
    storage.write_bytes(f"s3://{bucket}/out/film/notes.txt", b"someone else's")
    second = storage.stage(dest)
    new = write_outputs(second.root, b"two")
    (second.root / "shots" / "s001" / "shot.json").unlink()
    del new["shots/s001/shot.json"]
    second.commit()
    assert keys(storage, bucket) == sorted(f"out/film/{k}" for k in [*new, "_SUCCESS", "notes.txt"])
    success = storage.read_success(dest)
    assert success["run"] == second.run_id
    assert {f["key"]: f["sha256"] for f in success["files"]} == {k: sha256(v) for k, v in new.items()}
    assert storage.client.get_object(Bucket=bucket, Key="out/film/film.mp4")["Body"].read() == b"film two"


def test_abort_on_fresh_destination_leaves_it_empty(storage, bucket):
    staging = storage.stage(f"s3://{bucket}/fresh")
    write_outputs(staging.root, b"x")
    staging.abort()
    assert keys(storage, bucket) == [] and not storage.exists(f"s3://{bucket}/fresh")
    with pytest.raises(StorageError, match="not published"):
        storage.read_success(f"s3://{bucket}/fresh")


def test_failed_commit_leaves_destination_unpublished(storage, bucket, monkeypatch):
    dest = f"s3://{bucket}/out"
    first = storage.stage(dest)
    write_outputs(first.root, b"one")
    first.commit()

    def broken_copy(self, bucket, pairs, uri):
        raise StorageError(f"{uri}: copy failed (simulated)")

    second = storage.stage(dest)
    write_outputs(second.root, b"two")
    monkeypatch.setattr(S3Storage, "_copy_many", broken_copy)
    with pytest.raises(StorageError, match="simulated"):
        second.commit()
    assert not storage.is_published(dest)  # the old marker went before anything changed
    assert not [k for k in keys(storage, bucket) if "/.staging-" in k]
    assert second.root.exists()  # kept for a retry...
    monkeypatch.undo()
    assert second.commit() == dest  # ...which works
    assert storage.read_success(dest)["run"] == second.run_id


WRITE_OPS = {"PutObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "UploadPartCopy",
             "CompleteMultipartUpload", "DeleteObject", "DeleteObjects"}


def test_published_only_when_complete(server, bucket):
    """Record every write request: nothing under DEST before all staging uploads ended; _SUCCESS last."""
    st = S3Storage(server.client(), multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    events: list[tuple[str, str, tuple[str, ...]]] = []

    def before(params, model, context, **kwargs):
        if model.name in WRITE_OPS:
            ks = tuple(o["Key"] for o in params["Delete"]["Objects"]) if model.name == "DeleteObjects" else (params["Key"],)
            context["recorded"] = ks
            events.append(("start", model.name, ks))

    def after(model, context, **kwargs):
        if model.name in WRITE_OPS:
            events.append(("end", model.name, context["recorded"]))

    st.client.meta.events.register("before-parameter-build.s3", before)
    st.client.meta.events.register("after-call.s3", after)
    dest = f"s3://{bucket}/pub"
    for run in (b"one", b"two"):  # the second run also has to remove the first _SUCCESS
        events.clear()
        staging = st.stage(dest)
        write_outputs(staging.root, run)
        (staging.root / "big.bin").write_bytes(os.urandom(6 * MiB))  # multipart upload and copy
        staging.commit()

        def staged(ks):
            return all("/.staging-" in k for k in ks)

        staging_ends = [i for i, (edge, op, ks) in enumerate(events) if edge == "end" and staged(ks)
                        and op not in ("DeleteObjects", "DeleteObject")]
        final = [i for i, (edge, op, ks) in enumerate(events) if not staged(ks)]
        assert staging_ends and final and max(staging_ends) < min(final)
        final_writes = [(op, ks) for edge, op, ks in (events[i] for i in final) if edge == "start"]
        assert final_writes[-1] == ("PutObject", ("pub/_SUCCESS",))
        i_success = events.index(("start", "PutObject", ("pub/_SUCCESS",)))
        assert events[i_success + 1] == ("end", "PutObject", ("pub/_SUCCESS",))
        assert all(staged(ks) for _, _, ks in events[i_success + 2:])  # after it, only the staging cleanup
        if run == b"two":
            assert final_writes[0] == ("DeleteObjects", ("pub/_SUCCESS",))
    assert not [k for k in keys(st, bucket) if "/.staging-" in k]


# --------------------------------------------------------------------------- key safety


@pytest.mark.parametrize("key", ["a/../../etc/passwd", "/abs/key", "..\\x", "../../..", "sp ace/é.txt"])
def test_local_path_stays_inside_workdir(storage, bucket, tmp_path, key):
    uri = f"s3://{bucket}/{key}"
    if key == "../../..":
        with pytest.raises(StorageError, match="cannot derive a local file name"):
            local_target(tmp_path, bucket, key)
        return
    storage.write_bytes(uri, key.encode())
    workdir = tmp_path / "work"
    local = storage.local_path(uri, workdir)
    assert local.is_relative_to(workdir.resolve()) and local.read_bytes() == key.encode()
    assert ".." not in local.relative_to(workdir.resolve()).parts and "\\" not in str(local)
    assert files_in(tmp_path) == files_in(workdir)  # nothing written outside


def test_distinct_keys_get_distinct_files(tmp_path):
    a = local_target(tmp_path, "bkt", "x/y.mp4")
    b = local_target(tmp_path, "bkt", "x/../y.mp4")
    c = local_target(tmp_path, "bkt", "/x/y.mp4")
    assert len({a, b, c}) == 3 and a == tmp_path.resolve() / "s3" / "bkt" / "x" / "y.mp4"


def test_symlink_out_of_workdir_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "s3").symlink_to(outside)
    with pytest.raises(StorageError, match="outside the work folder"):
        local_target(workdir, "bkt", "a.mp4")


# --------------------------------------------------------------------------- errors


def test_missing_object(storage, bucket, tmp_path):
    uri = f"s3://{bucket}/no/such.mp4"
    assert storage.exists(uri) is False
    assert not storage.is_published(f"s3://{bucket}/no")
    with pytest.raises(StorageError) as err:
        storage.local_path(uri, tmp_path)
    assert uri in str(err.value) and "no such object" in str(err.value)
    assert files_in(tmp_path) == []


def test_missing_bucket(storage, tmp_path):
    uri = "s3://no-such-bucket-dub/film.mp4"
    for call in (lambda: storage.local_path(uri, tmp_path), lambda: storage.exists(uri),
                 lambda: storage.stage("s3://no-such-bucket-dub/out")):
        with pytest.raises(StorageError) as err:
            call()
        msg = str(err.value)
        assert "s3://no-such-bucket-dub/" in msg and "does not exist" in msg and "DUB_S3_ENDPOINT_URL" in msg
    assert files_in(tmp_path) == []


def test_unreachable_endpoint(tmp_path):
    st = S3Storage(s3_client(closed_port_url(), max_attempts=1, connect_timeout=1, read_timeout=2))
    uri = "s3://some-bucket/film.mp4"
    for call in (lambda: st.local_path(uri, tmp_path), lambda: st.exists(uri), lambda: st.stage("s3://some-bucket/out")):
        with pytest.raises(StorageError) as err:
            call()
        msg = str(err.value)
        assert "s3://some-bucket/" in msg and "cannot reach bucket 'some-bucket'" in msg and "DUB_S3_ENDPOINT_URL" in msg
    assert files_in(tmp_path) == []
