"""The soak's peers beyond the simulator: a fresh PostgreSQL database, and the S3 bucket checks.

Kept apart from ``bench/soak.py`` so the driver reads as chaos + verdict; both pieces check
from the outside, with plain clients (asyncpg for the database's life, boto3 for S3 GETs),
never through callwatch's own code.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg

from tests.s3server import S3_KEY_ID, S3_SECRET, S3Server
from worker.archive.layout import PARTIAL_DIR


@contextlib.asynccontextmanager
async def fresh_database(server_url: str, *, keep: bool) -> AsyncIterator[str]:
    """A new, empty database ``callwatch_soak_<hex>`` on the server of ``server_url``; its URL.
    Dropped at the end (with its connections: a killed worker's may linger) unless ``keep``."""
    name = f"callwatch_soak_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        if not keep:
            admin = await asyncpg.connect(server_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()


@dataclass(frozen=True)
class Bucket:
    """Where the soak's daemons archive: ``s3://name/prefix`` on a loopback S3 server."""

    server: S3Server
    name: str
    prefix: str = "rec"

    @property
    def url(self) -> str:
        return f"s3://{self.name}/{self.prefix}"

    def config(self) -> tuple[str, dict[str, str]]:
        """The ``[archive.s3]`` section and the environment holding its credentials."""
        section = (f'[archive.s3]\nendpoint_url = "{self.server.endpoint}"\n'
                   'region = "us-east-1"\naccess_key_id_env = "SOAK_S3_KEY_ID"\n'
                   'secret_access_key_env = "SOAK_S3_SECRET"\n')
        return section, {"SOAK_S3_KEY_ID": S3_KEY_ID, "SOAK_S3_SECRET": S3_SECRET}

    def scratch(self) -> list[str]:
        """Scratch objects (uploads in progress, or left by a killed one)."""
        partial = f"{self.prefix}/{PARTIAL_DIR}/"
        return [k for k in self.server.keys(self.name) if k.startswith(partial)]

    def pending(self) -> list[str]:
        """Unfinished multipart uploads."""
        return self.server.pending_uploads(self.name)

    def final_keys(self) -> list[str]:
        partial = f"{self.prefix}/{PARTIAL_DIR}/"
        return [k for k in self.server.keys(self.name) if not k.startswith(partial)]

    def get(self, key: str) -> tuple[bytes, dict[str, str]]:
        """A plain S3 GET: the object's bytes and its user metadata."""
        got = self.server.client.get_object(Bucket=self.name, Key=key)
        return got["Body"].read(), dict(got.get("Metadata", {}))


async def upload_in_flight(bucket: Bucket) -> bool:
    """Is a multipart upload open right now? Only a live one can be: every start of a worker
    aborts the open ones (moto dates them all 2010, older than any ``stale_after``). Scratch
    objects are no sign, a killed attempt's stays until the recording's next attempt."""
    return bool(await anyio.to_thread.run_sync(bucket.pending))


@dataclass
class BucketVerdict:
    """What a plain S3 client finds in the bucket after the daemons stopped cleanly."""

    objects_checked: int = 0  # final keys read back whole through a GET
    digests: dict[str, str] = field(default_factory=dict)  # final key -> sha256 of its GET
    partial_objects: int = 0  # under a final key, but not a whole recording with its sha256
    stray_objects: int = 0  # whole, but no archived recording refers to it
    stray_keys: list[str] = field(default_factory=list)  # the first few, to look into
    unfinished_uploads: int = 0
    scratch_objects: int = 0


def inspect_bucket(bucket: Bucket, referenced: Iterable[str],
                   whole_digests: set[str]) -> BucketVerdict:
    """GET every object under a final key and judge it: its sha256 must be its metadata's
    and one of a recording's (else it is partial); it must be referenced (else stray).
    Blocking (boto3): run it in a thread."""
    wanted = set(referenced)
    verdict = BucketVerdict()
    for key in bucket.final_keys():
        body, metadata = bucket.get(key)
        verdict.objects_checked += 1
        digest = hashlib.sha256(body).hexdigest()
        verdict.digests[key] = digest
        if digest != metadata.get("sha256") or digest not in whole_digests or \
                str(len(body)) != metadata.get("size"):
            verdict.partial_objects += 1
        elif key not in wanted:
            verdict.stray_objects += 1
            if len(verdict.stray_keys) < 20:
                verdict.stray_keys.append(key)
    verdict.unfinished_uploads = len(bucket.pending())
    verdict.scratch_objects = len(bucket.scratch())
    return verdict
