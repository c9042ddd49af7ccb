"""The few S3 calls obstore does not offer, signed with AWS Signature V4 over httpx.

obstore streams the bytes (a multipart upload fed from an async iterator) but has no
CopyObject that *replaces* metadata, no ListMultipartUploads and no AbortMultipartUpload by
id; the S3 target needs all three (sha256 in the final object's metadata; stale uploads of
killed runs aborted at start). Each call here is one small request, so a hand-rolled signer
(the documented algorithm, ~40 lines) is cheaper than a second S3 library.

Credentials only ever enter the ``Authorization`` header; no error message here quotes a
header, a URL query or a response body beyond S3's one-word error ``Code``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import anyio
import httpx
import stamina

from worker.archive.target import Fault, TargetError
from worker.secrets import Secret

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_CODE = re.compile(rb"<Code>([A-Za-z0-9.]{1,64})</Code>")
# The bucket or the credentials are wrong: no recording can be stored until someone fixes it.
PAUSE_CODES = frozenset({"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId",
                         "SignatureDoesNotMatch", "AllAccessDisabled", "InvalidBucketName",
                         "AccountProblem", "ExpiredToken", "InvalidToken"})


@dataclass(frozen=True, kw_only=True, slots=True)
class Credentials:
    access_key_id: Secret
    secret_access_key: Secret


@dataclass(frozen=True, kw_only=True, slots=True)
class Head:
    """What HEAD says about an object."""

    size: int
    content_type: str | None
    metadata: Mapping[str, str]  # x-amz-meta-* without the prefix
    checksum_sha256: str | None = None  # S3's own full-object SHA-256 (hex), when it has one


@dataclass(frozen=True, kw_only=True, slots=True)
class PendingUpload:
    key: str
    upload_id: str
    initiated: float  # POSIX seconds


def _hex(checksum: str) -> str | None:
    """S3's base64 ``x-amz-checksum-sha256`` as hex; None for a composite ``...-N`` one."""
    try:
        raw = base64.b64decode(checksum, validate=True)
    except ValueError:
        return None
    return raw.hex() if len(raw) == 32 else None


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sign(method: str, url: str, headers: dict[str, str], payload_sha256: str,  # noqa: PLR0917
         credentials: Credentials, region: str, now: datetime) -> dict[str, str]:
    """``headers`` plus ``x-amz-date``, ``x-amz-content-sha256`` and ``Authorization``."""
    parts = urlsplit(url)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    signed = {k.lower(): v.strip() for k, v in headers.items()}
    signed.update({"host": parts.netloc, "x-amz-date": stamp,
                   "x-amz-content-sha256": payload_sha256})
    names = sorted(signed)
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, _, v in
                   (p.partition("=") for p in parts.query.split("&") if p))
    canonical = "\n".join([
        method, parts.path or "/", "&".join(f"{k}={v}" for k, v in pairs),
        "".join(f"{n}:{signed[n]}\n" for n in names), ";".join(names), payload_sha256])
    scope = f"{stamp[:8]}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + credentials.secret_access_key.reveal()).encode()
    for part in (stamp[:8], region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    signed["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key_id.reveal()}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}")
    del signed["host"]
    return signed


def _field(body: bytes, name: str) -> str | None:
    """The text of the first ``<name>`` element of a small S3 reply (None if absent)."""
    found = re.search(rb"<" + name.encode() + rb">([^<]{1,1024})</" + name.encode() + rb">",
                      body[:65536])
    return html.unescape(found.group(1).decode()) if found else None


def error_code(body: bytes) -> str | None:
    found = _CODE.search(body[:4096])
    return found.group(1).decode() if found else None


def classify(status: int, code: str | None, what: str) -> TargetError:
    """An S3 error reply as the archiver should act on it."""
    label = code or f"HTTP {status}"
    if code in PAUSE_CODES or (code is None and status in (401, 403)):
        return TargetError(Fault.PAUSE, f"object storage refused {what}: {label}")
    return TargetError(Fault.RETRY, f"object storage failed {what}: {label}")


RETRY_ATTEMPTS = 4
RETRY_TIMEOUT = 30.0


def _retryable(exc: Exception) -> bool:
    return isinstance(exc, TargetError) and exc.kind is Fault.RETRY


class S3Rest:
    """Signed, path-style (or virtual-hosted on AWS) requests to one bucket."""

    def __init__(self, client: httpx.AsyncClient, *, bucket: str, region: str,
                 endpoint_url: str | None, credentials: Credentials) -> None:
        self._client = client
        self._bucket = bucket
        self._region = region
        self._credentials = credentials
        if endpoint_url:
            self._base = f"{endpoint_url.rstrip('/')}/{bucket}"
        else:
            self._base = f"https://{bucket}.s3.{region}.amazonaws.com"

    def _url(self, key: str, query: str = "") -> str:
        path = "/" + quote(key, safe="/-_.~") if key else "/"
        return f"{self._base}{path}" + (f"?{query}" if query else "")

    async def request(self, method: str, key: str, *, query: str = "",
                      headers: Mapping[str, str] | None = None, body: bytes = b"",
                      what: str, ok: tuple[int, ...] = (200,)) -> httpx.Response:
        """One signed request; 5xx, SlowDown, timeouts are retried with back-off (stamina)
        for up to ``RETRY_TIMEOUT`` seconds before the attempt fails; PAUSE errors at once."""
        async for attempt in stamina.retry_context(on=_retryable, attempts=RETRY_ATTEMPTS,
                                                   timeout=RETRY_TIMEOUT):
            with attempt:
                return await self._request(method, key, query, headers, body, what, ok)
        raise AssertionError("unreachable: stamina re-raises the last failure")  # pragma: no cover

    async def _request(self, method: str, key: str, query: str,  # noqa: PLR0917
                       headers: Mapping[str, str] | None, body: bytes, what: str,
                       ok: tuple[int, ...]) -> httpx.Response:
        url = self._url(key, query)
        signed = sign(method, url, dict(headers or {}), hashlib.sha256(body).hexdigest(),
                      self._credentials, self._region, datetime.now(UTC))
        try:
            response = await self._client.request(method, url, headers=signed, content=body)
        except httpx.TransportError as exc:  # the message may quote the URL: keep the type
            raise TargetError(Fault.RETRY, f"object storage unreachable during {what} "
                                           f"({type(exc).__name__})") from None
        if response.status_code not in ok:
            raise classify(response.status_code, error_code(response.content), what)
        return response

    async def head(self, key: str) -> Head | None:
        response = await self.request("HEAD", key, what="HEAD", ok=(200, 404),
                                      headers={"x-amz-checksum-mode": "ENABLED"})
        if response.status_code == 404:
            return None
        meta = {k[11:]: v for k, v in response.headers.items() if k.startswith("x-amz-meta-")}
        checksum = response.headers.get("x-amz-checksum-sha256")
        return Head(size=int(response.headers.get("content-length", "-1")),
                    content_type=response.headers.get("content-type"), metadata=meta,
                    checksum_sha256=_hex(checksum) if checksum else None)

    async def copy(self, source: str, target: str, *, content_type: str,
                   metadata: Mapping[str, str]) -> None:
        """Server-side copy ``source`` -> ``target`` with new type and metadata (CopyObject)."""
        headers = {"x-amz-copy-source": "/" + quote(f"{self._bucket}/{source}", safe="/-_.~"),
                   "x-amz-metadata-directive": "REPLACE", "content-type": content_type,
                   # S3 computes the copy's own full-object SHA-256 (a single-part object).
                   "x-amz-checksum-algorithm": "SHA256"}
        headers.update({f"x-amz-meta-{k}": v for k, v in metadata.items()})
        response = await self.request("PUT", target, headers=headers, what="CopyObject")
        if b"<Error>" in response.content[:512]:  # S3 can fail a copy inside a 200
            raise classify(500, error_code(response.content), "CopyObject")

    async def copy_multipart(self, source: str, target: str, *, size: int,
                             part_size: int, concurrency: int, content_type: str,
                             metadata: Mapping[str, str]) -> None:
        """Server-side copy of an object too big for one CopyObject (5 GiB on AWS):
        CreateMultipartUpload with the new type and metadata, UploadPartCopy of each
        ``part_size`` range of ``source`` (``concurrency`` at a time), Complete. Any failure
        aborts the upload, so nothing is ever visible at ``target`` but the whole copy.

        No ``x-amz-checksum-algorithm``: a multipart object's SHA-256 would be S3's composite
        (a digest of the parts' digests), not comparable with ours; ``sha256`` in the metadata
        is the object's digest, and each source part's SHA-256 was checked on upload."""
        headers = {"content-type": content_type}
        headers.update({f"x-amz-meta-{k}": v for k, v in metadata.items()})
        created = await self.request("POST", target, query="uploads=", headers=headers,
                                     what="CreateMultipartUpload")
        upload_id = _field(created.content, "UploadId")
        if not upload_id:
            raise classify(500, error_code(created.content), "CreateMultipartUpload")
        try:
            parts = await self._copy_parts(source, target, upload_id, size=size,
                                           part_size=part_size, concurrency=concurrency)
            await self._complete(target, upload_id, parts)
        except BaseException:
            with anyio.move_on_after(30, shield=True), contextlib.suppress(TargetError):
                await self.abort(target, upload_id)
            raise

    async def _copy_parts(self, source: str, target: str, upload_id: str, *, size: int,
                          part_size: int, concurrency: int) -> list[tuple[int, str]]:
        """UploadPartCopy of every range: (part number, ETag), in order."""
        copy_source = "/" + quote(f"{self._bucket}/{source}", safe="/-_.~")
        upload = quote(upload_id, safe="")
        parts: list[tuple[int, str]] = []
        limiter = anyio.CapacityLimiter(concurrency)

        async def copy_part(number: int, first: int, last: int) -> None:
            async with limiter:
                reply = await self.request(
                    "PUT", target, query=f"partNumber={number}&uploadId={upload}",
                    headers={"x-amz-copy-source": copy_source,
                             "x-amz-copy-source-range": f"bytes={first}-{last}"},
                    what="UploadPartCopy")
            etag = _field(reply.content, "ETag")
            if etag is None:  # S3 can fail a part copy inside a 200
                raise classify(500, error_code(reply.content), "UploadPartCopy")
            parts.append((number, etag))

        try:
            async with anyio.create_task_group() as group:
                for number, first in enumerate(range(0, size, part_size), start=1):
                    group.start_soon(copy_part, number, first, min(first + part_size, size) - 1)
        except ExceptionGroup as failed:  # the first part's own error, as for any other call
            errors = failed.subgroup(TargetError)
            while errors is not None and isinstance(errors.exceptions[0], ExceptionGroup):
                errors = errors.exceptions[0]
            if errors is None:
                raise
            raise errors.exceptions[0] from None
        return sorted(parts)

    async def _complete(self, key: str, upload_id: str,
                        parts: list[tuple[int, str]]) -> None:
        body = "".join(f"<Part><PartNumber>{number}</PartNumber><ETag>{escape(etag)}</ETag>"
                       "</Part>" for number, etag in parts)
        done = await self.request(
            "POST", key, query=f"uploadId={quote(upload_id, safe='')}",
            body=f"<CompleteMultipartUpload>{body}</CompleteMultipartUpload>".encode(),
            headers={"content-type": "application/xml"}, what="CompleteMultipartUpload")
        if b"<Error>" in done.content[:512]:  # S3 can fail a Complete inside a 200
            raise classify(500, error_code(done.content), "CompleteMultipartUpload")

    async def put(self, key: str, body: bytes) -> None:
        await self.request("PUT", key, body=body, what="PutObject")

    async def delete(self, key: str) -> None:
        await self.request("DELETE", key, what="DeleteObject", ok=(200, 204, 404))

    async def pending_uploads(self, prefix: str) -> list[PendingUpload]:
        """Unfinished multipart uploads whose key starts with ``prefix`` (first 1000)."""
        query = f"prefix={quote(prefix, safe='')}&uploads="
        response = await self.request("GET", "", query=query, what="ListMultipartUploads")
        found = []
        # Our own bucket's reply over TLS, size-bounded by S3; no DTD is ever expanded by
        # expat's defaults for entities declared externally.
        for node in ElementTree.fromstring(response.content).iter():  # noqa: S314
            if not node.tag.endswith("Upload"):
                continue
            fields = {child.tag.rsplit("}", 1)[-1]: child.text or "" for child in node}
            if "Key" in fields and "UploadId" in fields:
                initiated = datetime.fromisoformat(fields.get("Initiated", "").replace(
                    "Z", "+00:00")).timestamp() if fields.get("Initiated") else 0.0
                found.append(PendingUpload(key=fields["Key"], upload_id=fields["UploadId"],
                                           initiated=initiated))
        return found

    async def abort(self, key: str, upload_id: str) -> None:
        await self.request("DELETE", key, query=f"uploadId={quote(upload_id, safe='')}",
                           what="AbortMultipartUpload", ok=(200, 204, 404))
