"""Fetch one recording's bytes into a scratch file, checking everything a 200 can hide.

What can go wrong, and what it means for the attempt (``reason`` is always safe to log: it
never quotes a URL's query string or a header value)::

    DownloadError              one try at the bytes failed
    +-- LinkRejectedError      401/403: the link expired or was revoked -> get a fresh one
    +-- GoneError              404/410: the object is not there -> does the provider still have it?
    +-- TooLargeError          over [archive] max_size -> give up on the recording
    +-- NotARecordingError     the reply is not the recording (an XML/HTML/JSON body, a length
    |                          that does not add up, a non-http(s) link) -> retry later
    +-- TransientError         network, 5xx, 429, a connection cut too often -> retry later

    TargetError              not a DownloadError: the target's own (pause or retry)

A cut connection is resumed with ``Range: bytes=N-`` (and ``If-Range`` when the server gave a
strong ETag) if the server answers 206 with the matching ``Content-Range``; a 200 instead means
it will not resume, so the file starts over. Redirects are followed by hand, only to http(s),
at most ``max_redirects`` times, and the provider's credentials never leave the origin they
were issued for. Bytes are handed to the target's upload (which hashes them) one MiB at a time,
while the event loop reads the next MiB: memory stays a few MiB whatever the file size.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream
from structlog.typing import FilteringBoundLogger

from worker.archive.target import TargetError, Upload
from worker.config_sections import ArchiveConfig
from worker.errors import CallwatchError
from worker.model import DownloadSource
from worker.providers._http import (
    content_length,
    resolve_location,
    retry_after_seconds,
    same_origin,
)
from worker.urls import safe_url

BATCH = 1 << 20  # bytes handed to the writer thread at once (as the chunks they came in)
QUEUE = 2  # batches waiting for the writer: bounds memory per download
MAX_RESUMES = 5  # cut connections survived within one attempt
SNIFF_BYTES = 64
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DOCUMENT_TYPES = frozenset({"application/json", "application/xml", "application/xhtml+xml",
                             "application/javascript", "application/problem+json"})
_DOCUMENT_PREFIXES = ("text/", "image/")
# What error pages and object-store errors start with; no audio or video container does.
_DOCUMENT_STARTS = (b"<?xml", b"<!doctype", b"<html", b"<error", b'{"error', b'{"message')


class DownloadError(CallwatchError):
    """One try at a recording's bytes failed; ``reason`` is one line, safe to log and store."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LinkRejectedError(DownloadError):
    """401/403 from storage: the link is dead; a fresh one may work."""


class GoneError(DownloadError):
    """404/410 from storage."""


class TooLargeError(DownloadError):
    """The recording is larger than ``max_size``: refused for good."""


class NotARecordingError(DownloadError):
    """The server answered, but not with the recording."""


class TransientError(DownloadError):
    """Worth another attempt later; ``retry_after`` is the server's wish, if it said."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _CutError(CallwatchError):
    """The connection broke (or never came up); the bytes so far are kept."""


class _StartOverError(CallwatchError):
    """The server cannot continue where we stopped: truncate and fetch from byte zero."""


@dataclass(kw_only=True)
class Transfer:
    """One recording's bytes fetched so far, kept across cut connections and fresh links."""

    partial: Upload  # the target's upload the bytes flow into
    expected_size: int | None  # the provider's word, when it gave one
    total: int | None = None  # what storage announced
    content_type: str | None = None
    etag: str | None = None
    cuts: int = 0
    received: int = 0  # bytes read off the network so far, some not yet written (progress)


async def fetch(client: httpx.AsyncClient, source: DownloadSource, transfer: Transfer,
                config: ArchiveConfig, log: FilteringBoundLogger) -> None:
    """Fill ``transfer.partial`` with the whole recording from ``source``, or raise."""
    while True:
        try:
            await _request(client, source, transfer, config, log)
        except _CutError as cut:
            transfer.cuts += 1
            if transfer.cuts > MAX_RESUMES:
                raise TransientError(f"connection cut {transfer.cuts} times ({cut})") from None
            log.info("recording.download_resumed", offset=transfer.partial.size, cause=str(cut))
            continue
        except _StartOverError as why:
            transfer.cuts += 1
            if transfer.cuts > MAX_RESUMES:
                raise TransientError(f"could not resume ({why})") from None
            log.warning("recording.download_restarted", cause=str(why),
                        discarded=transfer.partial.size)
            await transfer.partial.reset()
            transfer.total = transfer.etag = None
            continue
        _check_complete(transfer, config)
        return


async def _request(client: httpx.AsyncClient, source: DownloadSource, transfer: Transfer,
                   config: ArchiveConfig, log: FilteringBoundLogger) -> None:
    start = transfer.partial.size
    async with _open(client, source, _range_headers(transfer), config) as response:
        if response.status_code == 200 and start > 0:
            raise _StartOverError("the server ignored Range")
        _accept(response, transfer, start, config)
        await _pump(response, transfer, config)


def _range_headers(transfer: Transfer) -> dict[str, str]:
    start = transfer.partial.size
    if start == 0:
        return {}
    headers = {"Range": f"bytes={start}-"}
    if transfer.etag:
        headers["If-Range"] = transfer.etag  # a changed object comes back whole (200)
    return headers


@asynccontextmanager
async def _open(client: httpx.AsyncClient, source: DownloadSource, extra: Mapping[str, str],
                config: ArchiveConfig) -> AsyncIterator[httpx.Response]:
    """GET ``source``, following redirects by hand; yields the first non-redirect reply."""
    url = source.url
    credentials = dict(source.headers)
    timeout = httpx.Timeout(config.timeout, connect=min(config.timeout, 10.0))
    for _ in range(config.max_redirects + 1):
        scheme = _scheme(url)
        if scheme not in ("http", "https"):
            raise NotARecordingError(f"refusing a non-http(s) link ({scheme[:20]}:)")
        headers = {**credentials, **extra, "Accept-Encoding": "identity"}
        try:
            request = client.build_request("GET", url, headers=headers, timeout=timeout)
            response = await client.send(request, stream=True, follow_redirects=False)
        except httpx.TransportError as exc:  # also timeouts; the message may quote the URL
            raise _CutError(type(exc).__name__) from None
        except (httpx.InvalidURL, ValueError):
            raise NotARecordingError(f"unusable link to {safe_url(url)}") from None
        if response.status_code in _REDIRECTS:
            location = response.headers.get("location")
            await response.aclose()
            if not location:
                raise NotARecordingError(f"HTTP {response.status_code} without Location")
            target = resolve_location(url, location)
            if not same_origin(target, url):
                credentials = {}  # the provider's key is for the provider's own origin only
            url = target
            continue
        try:
            yield response
        finally:
            await response.aclose()
        return
    raise NotARecordingError(f"more than {config.max_redirects} redirects")


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:
        return "?"


def _accept(response: httpx.Response, transfer: Transfer, start: int,
            config: ArchiveConfig) -> None:
    """Check status, type, encoding and length before a single byte is kept."""
    status = response.status_code
    _check_status(response, start)
    _check_type(response.headers.get("content-type"), status)
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise NotARecordingError(f"storage sent a {encoding[:20]}-encoded body")
    total = _announced_total(response, start)
    if total is not None:
        if total > config.max_size:
            raise TooLargeError(f"the recording is {total} bytes, over max_size "
                                f"({config.max_size})")
        if transfer.expected_size is not None and total != transfer.expected_size:
            raise NotARecordingError(f"storage announced {total} bytes, the provider said "
                                     f"{transfer.expected_size}")
        if transfer.total is not None and total != transfer.total:
            raise _StartOverError("the object changed size between requests")
    transfer.total = total
    if start == 0:
        transfer.content_type = response.headers.get("content-type")
        etag = response.headers.get("etag")
        transfer.etag = etag if etag and not etag.startswith("W/") else None


def _check_status(response: httpx.Response, start: int) -> None:
    status = response.status_code
    if status in (401, 403):
        raise LinkRejectedError(f"HTTP {status} from storage")
    if status in (404, 410):
        raise GoneError(f"HTTP {status} from storage")
    if status == 416 and start > 0:
        raise _StartOverError("HTTP 416 for the resume range")
    if status in (429, 503):
        raise TransientError(f"HTTP {status} from storage",
                        retry_after_seconds(response.headers.get("retry-after")))
    if status not in (200, 206) or (status == 206 and start == 0):
        raise TransientError(f"HTTP {status} from storage")


def _check_type(content_type: str | None, status: int) -> None:
    """An HTML, XML, JSON or text body is an error page, whatever the status says."""
    if not content_type:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if (media in _DOCUMENT_TYPES or media.startswith(_DOCUMENT_PREFIXES)
            or media.endswith(("+xml", "+json"))):
        raise NotARecordingError(f"storage answered {status} with {media[:60]}, not a recording")


def _announced_total(response: httpx.Response, start: int) -> int | None:
    """The whole object's size as this reply announces it; _StartOverError if a 206 does not fit."""
    length = content_length(response.headers)
    if response.status_code == 200:
        return length
    first, last, total = _content_range(response.headers.get("content-range"))
    if first != start or total is None or last != total - 1:
        raise _StartOverError("Content-Range does not continue where we stopped")
    if length is not None and length != total - start:
        raise _StartOverError("Content-Length does not match Content-Range")
    return total


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """``bytes FIRST-LAST/TOTAL`` -> the three numbers; Nones for anything else."""
    if not value or not value.startswith("bytes "):
        return None, None, None
    span, _, total = value[6:].strip().partition("/")
    first, _, last = span.partition("-")
    if not (first.isdigit() and last.isdigit() and total.isdigit()):
        return None, None, None
    return int(first), int(last), int(total)


async def _pump(response: httpx.Response, transfer: Transfer, config: ArchiveConfig) -> None:
    """Stream the body into the scratch file; _CutError (bytes kept) when the connection breaks."""
    send, receive = anyio.create_memory_object_stream[list[bytes]](QUEUE)
    cut: str | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_write, receive, transfer.partial)
            async with send:
                cut = await _read(response, transfer, config, send.send)
    except BaseExceptionGroup as group:
        raise _unwrap(group) from None
    if cut is not None:
        raise _CutError(cut)


async def _read(response: httpx.Response, transfer: Transfer, config: ArchiveConfig,
                send: Callable[[list[bytes]], Awaitable[None]]) -> str | None:
    """Hand the body on in batches; return why it broke off, None when it ended."""
    received = transfer.received = transfer.partial.size
    limit = min(config.max_size, transfer.total if transfer.total is not None else config.max_size)
    pending: list[bytes] = []
    size = 0
    sniffed = received > 0
    cut = None
    try:
        async for chunk in response.aiter_raw():
            received += len(chunk)
            transfer.received = received
            if received > limit:
                raise _too_much(limit, config)
            pending.append(chunk)
            size += len(chunk)
            if not sniffed and size >= SNIFF_BYTES:
                sniffed = _sniff(b"".join(pending))
            if size >= BATCH:
                await send(pending)
                pending, size = [], 0
    except httpx.TransportError as exc:  # a cut, a stall past the timeout, a reset
        cut = type(exc).__name__
    if not sniffed and pending:
        _sniff(b"".join(pending))
    if pending:
        await send(pending)
    return cut


def _too_much(limit: int, config: ArchiveConfig) -> DownloadError:
    if limit >= config.max_size:
        return TooLargeError(f"the recording is over max_size ({config.max_size} bytes)")
    return NotARecordingError(f"storage sent more than the {limit} bytes it announced")


def _sniff(head: bytes) -> bool:
    """Reject a body that starts like an error document; True once checked."""
    start = head[:SNIFF_BYTES].lstrip().lower()
    if start.startswith(_DOCUMENT_STARTS):
        raise NotARecordingError("the body is an error document, not a recording")
    return True


async def _write(receive: MemoryObjectReceiveStream[list[bytes]], partial: Upload) -> None:
    async with receive:
        async for batch in receive:
            await partial.write(batch)


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that matters in a task group's failure: the target's first, then ours."""
    for kind in (TargetError, OSError, DownloadError, _CutError):
        matched, _ = group.split(kind)
        if matched is not None:
            first: BaseException = matched
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            return first
    return group


def _check_complete(transfer: Transfer, config: ArchiveConfig) -> None:
    """Every announced byte arrived, and as many as the provider said."""
    size = transfer.partial.size
    if transfer.total is not None and size != transfer.total:
        raise TransientError(f"received {size} of {transfer.total} bytes")
    if transfer.expected_size is not None and size != transfer.expected_size:
        raise NotARecordingError(f"received {size} bytes, the provider said "
                                 f"{transfer.expected_size}")
    if size == 0:
        raise NotARecordingError("storage sent an empty body")
    if size > config.max_size:
        raise TooLargeError(f"the recording is over max_size ({config.max_size} bytes)")
