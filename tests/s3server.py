"""A real S3 endpoint for tests: moto's server mode on 127.0.0.1, with fake credentials.

Usage (a module- or session-scoped fixture)::

    with moto_s3() as server:
        server.endpoint_url        # "http://127.0.0.1:PORT"
        server.client()            # a boto3 client for it
        server.bucket("name")      # create a bucket

Inside the block the AWS environment is replaced by fake credentials
(``AWS_ACCESS_KEY_ID=testing``...), region ``us-east-1``, no profile or config
files, and ``DUB_S3_ENDPOINT_URL`` pointing at the server; on exit the server
stops and the environment is restored exactly as it was.  moto accepts any
credentials, so "wrong credentials" cannot be simulated with it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import urllib.request
from contextlib import contextmanager
from typing import Any, Iterator

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
#: Variables removed inside the block (they would point boto3 elsewhere).
CLEARED = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL",
           "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "DUB_S3_RETRY_MODE",
           "DUB_S3_MAX_ATTEMPTS", "DUB_S3_MULTIPART_THRESHOLD", "DUB_S3_MULTIPART_CHUNKSIZE", "DUB_S3_ADDRESSING_STYLE")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port_url() -> str:
    """An http:// URL on 127.0.0.1 where nothing listens (connections are refused)."""
    return f"http://127.0.0.1:{free_port()}"


@contextmanager
def patched_env(values: dict[str, str], cleared: tuple[str, ...] = ()) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in (*values, *cleared)}
    try:
        for k in cleared:
            os.environ.pop(k, None)
        os.environ.update(values)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class MotoS3Server:
    """moto's ThreadedMotoServer on a free port of 127.0.0.1."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None

    def start(self, timeout: float = 10.0) -> "MotoS3Server":
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        deadline = time.monotonic() + timeout
        while True:  # wait until it answers
            try:
                urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto server did not start on {self.endpoint_url}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self, **kwargs: Any) -> Any:
        """A client of this server made by the project's own :func:`dubcore.s3.s3_client`."""
        from dubcore.s3 import s3_client

        return s3_client(self.endpoint_url, **kwargs)

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def reset(self) -> None:
        """Forget every bucket and object."""
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=5).close()


@contextmanager
def moto_s3() -> Iterator[MotoS3Server]:
    """Start a moto S3 server with fake credentials in the environment; stop it and restore the env after."""
    server = MotoS3Server()
    with patched_env({**FAKE_ENV, "DUB_S3_ENDPOINT_URL": server.endpoint_url}, CLEARED):
        server.start()
        try:
            yield server
        finally:
            server.stop()
