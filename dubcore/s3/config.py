"""S3 clients and transfer settings, from the ``DUB_S3_*`` environment (see :mod:`dubcore.s3`)."""

from __future__ import annotations

import os
import re
import threading
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from .errors import S3UsageError

ENV_ENDPOINT = "DUB_S3_ENDPOINT_URL"
MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_RETRY_MODE = "standard"


# --------------------------------------------------------------------------- configuration


def _env_bytes(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    m = re.fullmatch(r"(\d+)\s*([KMG]i?B?)?", text, flags=re.IGNORECASE)
    if not m:
        raise S3UsageError(f"{name}={text!r} is not a size; write bytes (67108864) or e.g. 64MiB")
    unit = (m.group(2) or "").upper().rstrip("B").rstrip("I")
    return int(m.group(1)) * {"": 1, "K": 1024, "M": MiB, "G": 1024 * MiB}[unit]


def _env_number(name: str, default: float, kind: type = float) -> Any:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return kind(text)
    except ValueError:
        raise S3UsageError(f"{name}={text!r} is not a number; unset it or give e.g. {default}") from None


def endpoint_url_from_env() -> str | None:
    """``$DUB_S3_ENDPOINT_URL``, or None (boto3 then applies ``AWS_ENDPOINT_URL*`` itself)."""
    return os.environ.get(ENV_ENDPOINT, "").strip() or None


_SESSIONS: dict[tuple[tuple[str, str], ...], boto3.session.Session] = {}
_SESSIONS_LOCK = threading.Lock()


def _client_from_shared_session(**kwargs: Any) -> Any:
    """A client from a session shared while the ``AWS_*`` environment is unchanged.

    A fresh session costs ~0.4 s (service models are parsed again); a session is
    keyed by the AWS environment so credentials resolved from it never go stale
    when that environment changes.  ``Session.client`` is not thread-safe: locked.
    """
    env_key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(env_key)
        if session is None:
            if len(_SESSIONS) > 8:
                _SESSIONS.clear()
            session = _SESSIONS[env_key] = boto3.session.Session()
        return session.client("s3", **kwargs)


def s3_client(endpoint_url: str | None = None, *, max_attempts: int | None = None, retry_mode: str | None = None,
              connect_timeout: float | None = None, read_timeout: float | None = None,
              addressing_style: str | None = None, session: boto3.session.Session | None = None) -> Any:
    """The one place S3 clients are made.

    Arguments override the ``DUB_S3_*`` environment (see the module doc); credentials
    and region come from the standard AWS chain.  Retries (``standard`` mode by
    default, 5 attempts) cover connection errors, 5xx answers and throttling.
    """
    endpoint_url = endpoint_url or endpoint_url_from_env()
    mode = retry_mode or os.environ.get("DUB_S3_RETRY_MODE", "").strip() or DEFAULT_RETRY_MODE
    if mode not in ("standard", "adaptive", "legacy"):
        raise S3UsageError(f"DUB_S3_RETRY_MODE={mode!r}: use 'standard' or 'adaptive'")
    attempts = max_attempts if max_attempts is not None else _env_number("DUB_S3_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, int)
    style = addressing_style or os.environ.get("DUB_S3_ADDRESSING_STYLE", "").strip() or None
    s3_opts = {"addressing_style": style} if style else None
    config = Config(
        retries={"mode": mode, "max_attempts": max(1, int(attempts))},
        connect_timeout=connect_timeout if connect_timeout is not None else _env_number("DUB_S3_CONNECT_TIMEOUT", 10.0),
        read_timeout=read_timeout if read_timeout is not None else _env_number("DUB_S3_READ_TIMEOUT", 60.0),
        max_pool_connections=32,
        s3=s3_opts,
    )
    if session is not None:
        return session.client("s3", endpoint_url=endpoint_url, config=config)
    return _client_from_shared_session(endpoint_url=endpoint_url, config=config)


def transfer_config(multipart_threshold: int | None = None, multipart_chunksize: int | None = None,
                    max_concurrency: int | None = None) -> TransferConfig:
    """Managed-transfer settings: multipart from ``multipart_threshold`` bytes on (default 64 MiB)."""
    threshold = multipart_threshold or _env_bytes("DUB_S3_MULTIPART_THRESHOLD", DEFAULT_MULTIPART_THRESHOLD)
    chunk = multipart_chunksize or _env_bytes("DUB_S3_MULTIPART_CHUNKSIZE", max(threshold, MIN_PART_SIZE))
    if chunk < MIN_PART_SIZE:
        raise S3UsageError(f"multipart chunk size {chunk} is below S3's 5 MiB minimum part size; "
                           f"set DUB_S3_MULTIPART_CHUNKSIZE to 5MiB or more")
    return TransferConfig(multipart_threshold=threshold, multipart_chunksize=chunk,
                          max_concurrency=max_concurrency or _env_number("DUB_S3_MAX_CONCURRENCY", 10, int),
                          preferred_transfer_client="classic")
