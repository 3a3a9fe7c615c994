"""Typed S3 errors: what kind of failure, so that callers decide by type, never by the message.

Every error :mod:`dubcore.s3` raises is an :class:`S3Error` (a
:class:`~dubcore.storage.StorageError`).  The kinds:

* :class:`S3Transient` (also a :class:`~dubcore.storage.TransientStorageError`): trying
  again may succeed -- :class:`S3Throttled`, :class:`S3ConnectionError`,
  :class:`S3ServerError` (a 5xx answer after botocore's own retries),
  :class:`S3ChecksumMismatch` (a download that does not verify);
* the others fail the same way every time: :class:`S3NotFound` (and
  :class:`S3NoSuchBucket`), :class:`S3NotPublished`, :class:`S3AccessDenied` (and
  :class:`S3CredentialsError`), :class:`S3RequestError` (any other refused request) and
  :class:`S3UsageError` (a malformed URI, a bad ``DUB_S3_*`` setting, a reserved name).

The messages say what failed, where, and what to check; the class says whether to retry.
"""

from __future__ import annotations

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, IncompleteReadError
from s3transfer.exceptions import RetriesExceededError, TransferNotDoneError

from dubcore.storage import StorageError, TransientStorageError


class S3Error(StorageError):
    """Base class of the errors of :mod:`dubcore.s3`."""


class S3UsageError(S3Error):
    """What was asked cannot work: a malformed S3 URI, a bad ``DUB_S3_*`` setting, a reserved output name."""


class S3NotFound(S3Error):
    """No such object (or key prefix) in the bucket."""


class S3NoSuchBucket(S3NotFound):
    """The bucket does not exist at the endpoint."""


class S3NotPublished(S3Error):
    """A destination without a (valid) ``_SUCCESS`` marker: its run has not completed, or failed."""


class S3AccessDenied(S3Error):
    """The store refused the credentials or the request (403 and its kin)."""


class S3CredentialsError(S3AccessDenied):
    """No usable AWS credentials were found."""


class S3RequestError(S3Error):
    """The store refused the request for another reason (a 4xx answer, a request botocore will not send)."""


class S3Transient(S3Error, TransientStorageError):
    """A failure that may heal: trying again may succeed."""


class S3Throttled(S3Transient):
    """The store kept throttling requests (SlowDown, 503...) even after botocore's retries."""


class S3ConnectionError(S3Transient):
    """The endpoint could not be reached, or the connection dropped or timed out."""


class S3ServerError(S3Transient):
    """The store answered a server error (5xx) even after botocore's retries."""


class S3ChecksumMismatch(S3Transient):
    """A download's size or checksum is not the object's: corrupted in transit, or the object changed meanwhile."""


#: Errors of the AWS stack that mean "the S3 operation failed" (mapped to an S3Error of their kind).
S3_ERRORS: tuple[type[BaseException], ...] = (BotoCoreError, ClientError, Boto3Error, RetriesExceededError,
                                              TransferNotDoneError)

_ACCESS_CODES = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                 "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem"}
_THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "503",
                   "TooManyRequests", "RequestThrottled"}

#: Codes of server errors (5xx) that botocore's retries did not get past.
_SERVER_CODES = {"InternalError", "ServiceUnavailable", "500", "502", "504"}
#: Failures below the HTTP answer: the connection dropped, a read timed out, transfer retries ran out.
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (HTTPClientError, IncompleteReadError, RetriesExceededError, OSError)


def error_class(code: str, status: int | None = None) -> type[S3Error]:
    """The :class:`S3Error` subclass for an S3 error ``code`` (and the answer's HTTP ``status``, when known)."""
    if code in _ACCESS_CODES:
        return S3AccessDenied
    if code == "NoSuchBucket":
        return S3NoSuchBucket
    if code in ("NoSuchKey", "404", "NotFound"):
        return S3NotFound
    if code in _THROTTLE_CODES:
        return S3Throttled
    if code in _SERVER_CODES or (status or 0) >= 500:
        return S3ServerError
    return S3RequestError


def exception_class(exc: BaseException) -> type[S3Error]:
    """The :class:`S3Error` subclass for a failure of the AWS stack other than an S3 answer (a ClientError)."""
    return S3ConnectionError if isinstance(exc, _NETWORK_ERRORS) else S3RequestError
