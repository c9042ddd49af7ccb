"""The S3 target: ``[worker] archive = "s3://bucket/prefix"`` (AWS, MinIO, R2, Ceph...).

Bytes flow provider -> sha256 -> obstore's multipart upload, through a bounded queue (a few
MiB: no local copy of the recording). obstore completes a multipart upload when its input
ends and cannot add metadata computed from the bytes, so nothing is streamed to the final key:

1. stream to a scratch key ``<prefix>/.partial/<stem>-<random>.part`` (S3 checks each part's
   SHA-256 on arrival: obstore sends ``x-amz-checksum-sha256`` per part);
2. ``commit``: HEAD the scratch object, its length must be the bytes we hashed;
3. server-side CopyObject to the final key with ``x-amz-meta-sha256`` (our digest of every
   byte), ``x-amz-meta-size`` and the content type (metadata REPLACE) -- above ``COPY_LIMIT``
   (S3 caps one CopyObject at 5 GiB) a multipart copy with the same metadata -- HEAD it again
   to check length and sha256, then delete the scratch object.

The final key therefore only ever holds a whole object carrying its sha256; ``find``
(adoption) trusts only objects that carry it. A failed or cancelled upload is aborted (the
multipart upload too); what a killed run leaves (scratch objects, unfinished multipart uploads
under the prefix) is removed at the next start once older than ``stale_after``.

Range-resume of a cut download works as for the folder (the stream just continues); a
restart from byte zero aborts the upload and starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, cast

import anyio
import httpx
import obstore
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from obstore.exceptions import (
    BaseError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from worker.archive.layout import PARTIAL_DIR
from worker.archive.s3_rest import PAUSE_CODES, Credentials, S3Rest
from worker.archive.target import Fault, StoredObject, TargetError, join_url
from worker.config_sections import S3Config
from worker.errors import CallwatchError

if TYPE_CHECKING:
    from obstore.store import ClientConfig
    from obstore.store import S3Config as StoreConfig

CHUNK = 5 * 1024 * 1024  # multipart part size (S3's minimum: memory per download stays small)
CONCURRENCY = 3  # parts in flight: memory ~ CHUNK * (CONCURRENCY + 1)
QUEUE = 4  # batches (~1 MiB each) waiting between the download and the upload
# One CopyObject copies at most 5 GiB on AWS; above this, the copy to the final key is a
# multipart copy (UploadPartCopy of COPY_PART ranges, COPY_CONCURRENCY at a time). Module
# constants so a test can lower them and run that path with a small object.
COPY_LIMIT = 5 * 1024**3
COPY_PART = 512 * 1024**2
COPY_CONCURRENCY = 4
MAX_PARTS = 10_000  # S3's limit on parts per multipart upload
PROBE = b"callwatch probe\n"
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def classify_obstore(exc: BaseException, what: str) -> TargetError:
    """An obstore error as the archiver should act on it (the text may quote the URL)."""
    text = str(exc)
    code = next((c for c in PAUSE_CODES if c in text), None)
    if (isinstance(exc, PermissionDeniedError | UnauthenticatedError | PermissionError)
            or code is not None):
        return TargetError(Fault.PAUSE, f"object storage refused {what}: "
                                        f"{code or type(exc).__name__}")
    if "NoSuchUpload" in text:  # our multipart upload was aborted under us: this upload's
        # problem (a retry starts a new one), not the bucket's; a pause would say NoSuchBucket
        return TargetError(Fault.RETRY, f"object storage failed {what}: NoSuchUpload")
    if isinstance(exc, NotFoundError | FileNotFoundError):  # a put's "not found": the bucket
        return TargetError(Fault.PAUSE, f"object storage refused {what}: NoSuchBucket")
    return TargetError(Fault.RETRY, f"object storage failed {what}: {type(exc).__name__}")


class _AbortError(CallwatchError):
    """Ends the byte stream with an error so obstore aborts its multipart upload."""


class S3Upload:
    """One recording streaming into a scratch key (the ``Upload`` of the S3 target)."""

    def __init__(self, target: S3Target, stem: str) -> None:
        self._target = target
        self._stem = stem
        self._hash = hashlib.sha256()
        self.size = 0
        self._scratch = ""
        self._send: MemoryObjectSendStream[bytes | _AbortError] | None = None
        self._put: asyncio.Future[Any] | None = None

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def _begin(self) -> None:
        self._scratch = self._target.key(
            f"{PARTIAL_DIR}/{self._stem[:80]}-{secrets.token_hex(6)}.part")
        send, receive = anyio.create_memory_object_stream[bytes | _AbortError](QUEUE)
        self._send = send
        self._put = asyncio.ensure_future(obstore.put_async(
            self._target.store, self._scratch, _chunks(receive), use_multipart=True,
            chunk_size=CHUNK, max_concurrency=CONCURRENCY))
        # A put that fails before it has read everything (bucket gone, access refused) must
        # not leave write() blocked on a full queue: closing the receiving end wakes it.
        self._put.add_done_callback(lambda _: receive.close())

    async def write(self, chunks: Sequence[bytes]) -> None:
        if self._send is None:
            self._begin()
        send = self._send
        if send is None:  # pragma: no cover - _begin always sets it
            raise TargetError(Fault.RETRY, "upload not started")
        # One item per batch, not per 64 KiB chunk: every item obstore pulls from the stream
        # is a hop between its Rust threads and the event loop.
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if not data:
            return
        self._hash.update(data)
        self.size += len(data)
        try:
            await send.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self._finish_put()  # raises the put's own error
            raise TargetError(Fault.RETRY, "object storage upload ended early") from None

    async def reset(self) -> None:
        await self.abort()
        self._hash = hashlib.sha256()
        self.size = 0

    async def commit(self, final: PurePosixPath, content_type: str | None) -> None:
        if self._send is None:
            self._begin()
        try:
            if self._send is not None:
                await self._send.aclose()
            await self._finish_put()
            target, rest = self._target, self._target.rest
            head = await rest.head(self._scratch)
            if head is None or head.size != self.size:
                raise TargetError(Fault.RETRY, f"the uploaded object has {head and head.size} "
                                               f"bytes, {self.size} were sent")
            key = target.key(final.as_posix())
            kind = content_type or DEFAULT_CONTENT_TYPE
            metadata = {"sha256": self.sha256, "size": str(self.size)}
            if self.size > COPY_LIMIT:
                await rest.copy_multipart(
                    self._scratch, key, size=self.size, content_type=kind, metadata=metadata,
                    part_size=max(COPY_PART, -(-self.size // MAX_PARTS)),
                    concurrency=COPY_CONCURRENCY)
            else:
                await rest.copy(self._scratch, key, content_type=kind, metadata=metadata)
            placed = await rest.head(key)
            if (placed is None or placed.size != self.size
                    or placed.metadata.get("sha256") != self.sha256
                    or placed.checksum_sha256 not in (None, self.sha256)):
                with contextlib.suppress(TargetError):
                    await rest.delete(key)
                raise TargetError(Fault.RETRY, "the copied object does not match what was sent")
        finally:
            await self._drop_scratch()

    async def _finish_put(self) -> None:
        put, self._put = self._put, None
        if put is None:
            return
        try:
            await put
        except _AbortError:
            pass  # abort() ended the stream: obstore aborted its multipart upload
        except Exception as exc:  # obstore's BaseError, or builtin OSErrors it maps to
            raise classify_obstore(exc, "the upload") from None
        except asyncio.CancelledError:
            if not put.cancelled():
                raise
            # The put was cancelled (abort() with a full queue): _drop_scratch aborts its
            # multipart upload. An anyio scope cancelling us re-delivers at the next await.

    async def abort(self) -> None:
        send, put = self._send, self._put
        self._send = None
        if send is not None:
            try:  # an error at the end of the stream makes obstore abort its upload
                send.send_nowait(_AbortError())
            except anyio.WouldBlock:  # the queue is full: stop the upload where it is
                if put is not None:
                    put.cancel()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
            send.close()
        if put is not None:
            with anyio.move_on_after(30), contextlib.suppress(Exception):
                await self._finish_put()
        await self._drop_scratch()

    async def _drop_scratch(self) -> None:
        """Delete the scratch object and any multipart upload still open for it."""
        scratch, self._scratch = self._scratch, ""
        if not scratch:
            return
        with contextlib.suppress(TargetError):
            await self._target.rest.delete(scratch)
            for pending in await self._target.rest.pending_uploads(scratch):
                if pending.key == scratch:
                    await self._target.rest.abort(pending.key, pending.upload_id)


async def _chunks(receive: MemoryObjectReceiveStream[bytes | _AbortError]) -> AsyncIterator[bytes]:
    async with receive:
        async for item in receive:
            if isinstance(item, _AbortError):
                raise item
            yield item


class S3Target:
    """Recordings as objects under ``s3://bucket/prefix``."""

    def __init__(self, config: S3Config, *, stale_after: float,
                 client: httpx.AsyncClient | None = None) -> None:
        if config.access_key_id is None or config.secret_access_key is None:
            raise ValueError("[archive.s3] credentials were not resolved")
        self.config = config
        self.stale_after = stale_after
        store_config: dict[str, Any] = {
            "region": config.region, "access_key_id": config.access_key_id.reveal(),
            "secret_access_key": config.secret_access_key.reveal(),
            "checksum_algorithm": "SHA256"}
        client_options: dict[str, Any] = {"timeout": "120s", "connect_timeout": "10s"}
        if config.endpoint_url:
            store_config.update(endpoint=config.endpoint_url, virtual_hosted_style_request=False)
            client_options["allow_http"] = config.endpoint_url.startswith("http://")
        self.store = S3Store(config.bucket, config=cast("StoreConfig", store_config),
                             client_options=cast("ClientConfig", client_options))
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0))
        self.rest = S3Rest(self._client, bucket=config.bucket, region=config.region,
                           endpoint_url=config.endpoint_url,
                           credentials=Credentials(access_key_id=config.access_key_id,
                                                   secret_access_key=config.secret_access_key))

    @property
    def url(self) -> str:
        prefix = f"/{self.config.prefix}" if self.config.prefix else ""
        return f"s3://{self.config.bucket}{prefix}"

    def object_url(self, path: str) -> str:
        return join_url(self.url, path)

    def key(self, path: str) -> str:
        """The object key of ``path`` (relative to the prefix)."""
        return f"{self.config.prefix}/{path}" if self.config.prefix else path

    async def open(self) -> None:
        """Nothing to connect: ``cleanup`` (run right after) finds a missing bucket."""

    async def close(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def cleanup(self) -> int:
        """Abort multipart uploads and delete scratch objects older than ``stale_after``."""
        horizon = time.time() - self.stale_after
        removed = 0
        for pending in await self.rest.pending_uploads(self.key("")):
            if pending.initiated < horizon:
                await self.rest.abort(pending.key, pending.upload_id)
                removed += 1
        try:
            stream = obstore.list(self.store, self.key(PARTIAL_DIR) + "/")
            async for batch in stream:
                for meta in batch:
                    if meta["last_modified"].timestamp() < horizon:
                        await self.rest.delete(meta["path"])
                        removed += 1
        except (BaseError, OSError) as exc:
            raise classify_obstore(exc, "listing scratch objects") from None
        return removed

    async def probe(self) -> None:
        key = self.key(f"{PARTIAL_DIR}/probe-{secrets.token_hex(6)}")
        await self.rest.put(key, PROBE)
        await self.rest.delete(key)

    async def start(self, stem: str) -> S3Upload:
        # Best effort: a bucket that is missing or refuses us is reported by the upload itself
        # (a pause), and ``cleanup`` takes what is left here once it is old enough.
        with contextlib.suppress(TargetError):
            await self._drop_earlier(stem)
        return S3Upload(self, stem)

    async def _drop_earlier(self, stem: str) -> None:
        """Scratch an earlier attempt at this recording left (a worker killed after its upload
        completed but before its commit): too young for ``cleanup``, and nobody else's, since
        the download's lease makes this attempt the only one for the recording."""
        mine = re.compile(re.escape(stem[:80]) + r"-[0-9a-f]{12}\.part")
        try:
            async for batch in obstore.list(self.store, self.key(PARTIAL_DIR) + "/"):
                for meta in batch:
                    if mine.fullmatch(meta["path"].rsplit("/", 1)[-1]):
                        await self.rest.delete(meta["path"])
        except (BaseError, OSError) as exc:
            raise classify_obstore(exc, "listing scratch objects") from None
        for pending in await self.rest.pending_uploads(self.key(f"{PARTIAL_DIR}/{stem[:80]}-")):
            if mine.fullmatch(pending.key.rsplit("/", 1)[-1]):
                await self.rest.abort(pending.key, pending.upload_id)

    async def find(self, candidates: Sequence[PurePosixPath]) -> StoredObject | None:
        for candidate in candidates:
            head = await self.rest.head(self.key(candidate.as_posix()))
            digest = head.metadata.get("sha256", "") if head is not None else ""
            if head is None or len(digest) != 64:
                continue  # absent, or not written (verified) by us
            if head.metadata.get("size") != str(head.size):
                continue
            # Adopted: a worker killed after its copy to the final key but before deleting its
            # scratch left that scratch behind, too young for ``cleanup``.
            with contextlib.suppress(TargetError):
                await self._drop_earlier(candidate.stem)
            return StoredObject(path=candidate, size=head.size, sha256=digest)
        return None
