"""moto's S3 server for the whole test session (a pytest plugin: tests/conftest.py loads it).

One real S3-compatible peer on loopback, on a free port, started once and stopped at the end;
each test takes a fresh bucket from it. ``running_s3_server`` is the same server outside
pytest (``bench.soak --archive s3``).
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from worker.config_sections import S3Config
from worker.secrets import Secret


@dataclass(frozen=True)
class S3Server:
    """A moto S3 server on loopback: its endpoint and a boto3 client for plain checks."""

    endpoint: str
    client: Any

    def bucket(self) -> str:
        """A new, empty bucket."""
        name = f"rec-{uuid.uuid4().hex[:16]}"
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def pending_uploads(self, bucket: str) -> list[str]:
        listed = self.client.list_multipart_uploads(Bucket=bucket)
        return sorted(u["Key"] for u in listed.get("Uploads", []))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """moto's S3 server on a free loopback port (a thread of this process) until the block
    exits."""
    from moto.server import ThreadedMotoServer  # dev only, and a heavy import

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=S3_KEY_ID, aws_secret_access_key=S3_SECRET)
    try:
        yield S3Server(endpoint=endpoint, client=client)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server, once per test session, on a free loopback port."""
    with running_s3_server() as server:
        yield server


S3_KEY_ID = "AKIACALLWATCHTEST"
S3_SECRET = "callwatch-test-secret"  # noqa: S105 - moto accepts any key pair


def s3_config(server: S3Server, bucket: str, prefix: str = "rec") -> S3Config:
    return S3Config(bucket=bucket, prefix=prefix, region="us-east-1",
                    endpoint_url=server.endpoint, access_key_id=Secret(S3_KEY_ID),
                    secret_access_key=Secret(S3_SECRET))
