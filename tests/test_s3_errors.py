"""S3 errors are typed, and the retry policy decides by the type, never by the words of the message.

The errors are the real ones: raised by :mod:`dubcore.s3` from real botocore exceptions
(no request is sent: the endpoint is never contacted), then handed to
:func:`tasks.retry.is_transient` and to the Prefect hook :func:`tasks.retry.transient`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError

from dubcore import s3
from dubcore.storage import StorageError, TransientStorageError
from tasks.retry import is_transient, transient

URI = "s3://studio/inputs/film1/film.mp4"
ENDPOINT = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def storage() -> s3.S3Storage:
    return s3.S3Storage(client=s3.s3_client(ENDPOINT))


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} (simulated)"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize("exc, kind, retried", [
    (client_error("SlowDown", 503), s3.S3Throttled, True),
    (client_error("InternalError", 500), s3.S3ServerError, True),
    (EndpointConnectionError(endpoint_url=ENDPOINT), s3.S3ConnectionError, True),
    (ReadTimeoutError(endpoint_url=ENDPOINT), s3.S3ConnectionError, True),
    (client_error("NoSuchKey", 404), s3.S3NotFound, False),
    (client_error("NoSuchBucket", 404), s3.S3NoSuchBucket, False),
    (client_error("AccessDenied", 403), s3.S3AccessDenied, False),
    (NoCredentialsError(), s3.S3CredentialsError, False),
    (client_error("InvalidArgument", 400), s3.S3RequestError, False),
])
def test_each_failure_gets_its_type_and_the_type_decides_the_retry(storage, exc, kind, retried):
    err = storage._error(exc, URI, "downloading")
    assert type(err) is kind and isinstance(err, s3.S3Error) and isinstance(err, StorageError)
    assert isinstance(err, s3.S3Transient) is retried
    assert isinstance(err, TransientStorageError) is retried
    assert is_transient(err) is retried, err


def test_messages_are_unchanged(storage):
    err = storage._error(client_error("SlowDown", 503), URI, "downloading")
    assert str(err) == (f"{URI}: bucket 'studio' at endpoint {ENDPOINT} is throttling requests (SlowDown: SlowDown "
                        f"(simulated)) while downloading, even after retries; run again later or raise "
                        f"DUB_S3_MAX_ATTEMPTS")
    err = storage._error(client_error("NoSuchKey", 404), URI, "downloading")
    assert str(err) == (f"{URI}: no such object in bucket 'studio' at endpoint {ENDPOINT} (downloading); check the "
                        f"key, e.g. with `aws s3 ls s3://studio/inputs/film1/`")


@pytest.mark.parametrize("kind", [s3.S3Throttled, s3.S3ConnectionError, s3.S3ServerError, s3.S3ChecksumMismatch])
def test_a_transient_type_is_retried_whatever_its_message_says(kind):
    assert is_transient(kind(f"{URI}: 403 access denied, no such key, not found, invalid credentials"))


@pytest.mark.parametrize("kind", [s3.S3NotFound, s3.S3NoSuchBucket, s3.S3NotPublished, s3.S3AccessDenied,
                                  s3.S3CredentialsError, s3.S3RequestError, s3.S3UsageError, StorageError])
def test_a_deterministic_type_is_not_retried_whatever_its_message_says(kind):
    assert not is_transient(kind(f"{URI}: SlowDown, throttled, connection dropped; run again"))


def test_errors_raised_without_a_request(tmp_path: Path):
    with pytest.raises(s3.S3UsageError) as bad_uri:
        s3.parse_s3_uri("https://studio/film.mp4")
    assert not is_transient(bad_uri.value)
    part = tmp_path / "film.mp4.partial"
    part.write_bytes(b"x" * 999)
    with pytest.raises(s3.S3ChecksumMismatch, match="downloaded 999 bytes, expected 1000") as short:
        s3.verify_file(URI, part, {"ContentLength": 1000})
    assert is_transient(short.value)


class _Failed:
    """What Prefect hands a ``retry_condition_fn``: a state whose ``result()`` raises the task's exception."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def result(self) -> None:
        raise self.exc


def test_the_prefect_retry_condition_uses_the_same_types():
    assert transient(None, None, _Failed(s3.S3Throttled(f"{URI}: throttled")))
    assert not transient(None, None, _Failed(s3.S3NotFound(f"{URI}: throttled")))
