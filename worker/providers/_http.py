"""What every adapter does with HTTP: one GET, classified into a value the scheduler can act on.

The mapping from what the wire did to what the scheduler sees::

    2xx                         -> the reply (parsed JSON, or the bare response for probes)
    3xx                         -> the bare response for probes; unexpected for JSON endpoints
    404, 410                    -> NotFound
    401, 403                    -> PollFailed(CONFIG)          the key is wrong: shout
    429, 503                    -> PollFailed(RATE_LIMITED)    with the provider's Retry-After
    408, other 5xx, network,    -> retried here for a few seconds (stamina),
      timeouts                     then PollFailed(TRANSIENT)
    other 4xx                   -> PollFailed(CONFIG)          our request is wrong: shout
    bad JSON, wrong shape,      -> PollFailed(TRANSIENT) and a ``provider.unparseable`` warning
      a body over MAX_BODY         carrying the first bytes of the body

Redirects are never followed: a redirect target must not receive our credentials, and for
Ultravox's ``/recording`` the redirect *is* the answer. Bodies are streamed and cut at
``MAX_BODY`` DECODED bytes (``_inflate`` inflates gzip/deflate under that bound), so a 50 MB,
endless or gzip-bomb reply costs at most that much memory.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import anyio
import httpx
import stamina
from structlog.typing import FilteringBoundLogger

from worker.errors import CallwatchError
from worker.model import FailureKind, NotFound, PollFailed
from worker.providers import _inflate
from worker.providers._fields import UnparseableError
from worker.retry_after import parse_retry_after

T = TypeVar("T")

MAX_BODY = 2 * 1024 * 1024
# json.loads runs on the event loop and cannot yield: 2 MiB of tiny objects (~150,000) takes
# about 250 ms of one core. 100,000 values bound it under 100 ms; a real call object has a few
# hundred, and a 15,000-recording flood (~60,000) still parses, so it can end the call clearly.
MAX_JSON_VALUES = 100_000
MAX_RETRY_AFTER = 600.0
# Wall-clock cap on one attempt: the client's timeouts bound each read, not a reply that
# trickles in one byte at a time.
ATTEMPT_DEADLINE = 30.0
SNIPPET_BYTES = 200
_RETRY_ATTEMPTS = 3
_RETRY_TIMEOUT = 5.0
_MAX_ID_LENGTH = 200
_TOKEN = re.compile(r"[A-Za-z0-9._:-]+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NOT_CREDENTIALS = frozenset({"accept", "accept-encoding", "user-agent"})


class _RetryableError(CallwatchError):
    """Worth asking again in a moment: a 408 or 5xx (not 503), a network error, a timeout.

    It carries only a status or an exception type name, never the original message: stamina
    logs the repr of what it retries, and a transport error can quote a header value (h11's
    "Illegal header value b'...'" would print our key).
    """

    def __init__(self, what: str, status: int | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.status = status


@dataclass(frozen=True, slots=True)
class Reply:
    """A response whose body (if it was wanted) has been read, up to ``MAX_BODY``."""

    status: int
    headers: httpx.Headers
    body: bytes = b""
    too_large: bool = False


# --------------------------------------------------------------------------- requests


async def get_json(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: Mapping[str, str],
    log: FilteringBoundLogger,
    parse: Callable[[dict[str, Any]], T],
) -> T | NotFound | PollFailed:
    """GET a JSON object and hand it to ``parse`` (which raises ``UnparseableError``)."""
    reply = await request(client, url, headers=headers, log=log, read_body=True)
    if not isinstance(reply, Reply):
        return reply
    data = _json_object(reply, url, headers, log)
    if isinstance(data, PollFailed):
        return data
    try:
        return parse(data)
    except UnparseableError as exc:
        return unparseable(log, str(exc), _path(url), reply.body, headers)


def _path(url: str) -> str:
    """What a log line or error names a request by: the path, never the query (which can
    carry a signature). Worked out only when something goes wrong: it is a urlsplit."""
    return urlsplit(url).path


def _json_object(
    reply: Reply, url: str, headers: Mapping[str, str], log: FilteringBoundLogger
) -> dict[str, Any] | PollFailed:
    if not 200 <= reply.status < 300:
        path = _path(url)
        log.warning("provider.unexpected_status", status=reply.status, path=path)
        return PollFailed(kind=FailureKind.TRANSIENT,
                          message=f"unexpected HTTP {reply.status} from {path}")
    if reply.too_large:
        return unparseable(log, f"reply larger than {MAX_BODY} bytes", _path(url), reply.body,
                           headers)
    if len(reply.body) > 2 * MAX_JSON_VALUES and json_values(reply.body) > MAX_JSON_VALUES:
        return unparseable(log, f"more than {MAX_JSON_VALUES} JSON values", _path(url),
                           reply.body, headers)
    try:
        data = json.loads(reply.body)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return unparseable(log, "not JSON", _path(url), reply.body, headers)
    if not isinstance(data, dict):
        return unparseable(log, "not a JSON object", _path(url), reply.body, headers)
    return data


def json_values(body: bytes) -> int:
    """An upper bound on the values ``json.loads(body)`` would build: every value but the
    first of a container follows a comma, and every container opens with a bracket (commas
    and brackets inside strings only make it larger). Three C-speed scans, ~1 ms for 2 MiB."""
    return body.count(b",") + body.count(b"{") + body.count(b"[")


async def request(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: Mapping[str, str],
    log: FilteringBoundLogger,
    read_body: bool = False,
) -> Reply | NotFound | PollFailed:
    """GET ``url`` without following redirects; 2xx and 3xx come back as a ``Reply``.

    Without ``read_body`` the body is never read (the connection is closed instead), which is
    how an endpoint that may answer with the recording's bytes is asked where they are.
    """
    try:
        try:
            reply = await _attempt(client, url, headers, read_body=read_body)
        except _RetryableError as first:
            reply = await _retry(first, client, url, headers, read_body=read_body)
        if reply.status < 400:
            return reply
        return _classify(reply, _path(url), log)
    except _RetryableError as exc:
        what = exc.what
    except httpx.HTTPError as exc:  # not worth a retry, e.g. a body that does not decompress
        what = type(exc).__name__
    # Only the type: httpx messages can quote URLs and headers, which can carry credentials.
    path = _path(url)
    log.warning("provider.request_failed", error=what, path=path)
    return PollFailed(kind=FailureKind.TRANSIENT, message=f"{what} from {path}")


async def _retry(
    first: _RetryableError, client: httpx.AsyncClient, url: str, headers: Mapping[str, str],
    *, read_body: bool,
) -> Reply:
    """Retry after a first attempt failed, as if stamina had made that attempt too.

    The first attempt runs outside stamina because entering its retry context costs about
    90 µs, a tenth of a whole poll's CPU, and almost every poll succeeds at once. Re-raising
    the first failure inside the context keeps stamina's accounting (attempt count, back-off
    before the second try, instrumentation) exactly as if it had made that attempt itself.
    """
    failed: _RetryableError | None = first
    async for attempt in stamina.retry_context(
        on=_RetryableError, attempts=_RETRY_ATTEMPTS, timeout=_RETRY_TIMEOUT
    ):
        with attempt:
            if failed is not None:
                error, failed = failed, None
                raise error
            return await _attempt(client, url, headers, read_body=read_body)
    raise AssertionError("unreachable: stamina re-raises the last failure")  # pragma: no cover


async def _attempt(
    client: httpx.AsyncClient, url: str, headers: Mapping[str, str], *, read_body: bool
) -> Reply:
    # A bare CancelScope rather than anyio.fail_after: same deadline, a third of the cost
    # (no generator-based context manager), and this runs for every poll.
    try:
        with anyio.CancelScope(deadline=anyio.current_time() + ATTEMPT_DEADLINE):
            # send(stream=True) and aclose() are what client.stream() does, without its
            # generator-based context manager (about 15 µs a request).
            if read_body:  # only codings we can inflate under the cap (see _inflate)
                headers = {**headers, "Accept-Encoding": _inflate.ACCEPT_ENCODING}
            resp = await client.send(client.build_request("GET", url, headers=headers),
                                     stream=True, follow_redirects=False)
            try:
                status = resp.status_code
                if status == 408 or (status >= 500 and status != 503):
                    raise _RetryableError(f"HTTP {status}", status)
                if not (read_body and resp.is_success):
                    return Reply(status=status, headers=resp.headers)
                body, too_large = await _read_capped(resp)
                return Reply(status=status, headers=resp.headers, body=body,
                             too_large=too_large)
            finally:
                await resp.aclose()
    except httpx.TransportError as exc:  # httpx timeouts are TransportErrors
        raise _RetryableError(type(exc).__name__) from None
    raise _RetryableError("TimeoutError")  # the deadline passed: the scope swallowed it


async def _read_capped(resp: httpx.Response) -> tuple[bytes, bool]:
    """Read at most ``MAX_BODY`` DECODED bytes; say whether there was more.

    The raw body is inflated here under the cap (``_inflate``), never by httpx, which would
    inflate a whole 64 KiB chunk of a gzip bomb into about 64 MB before any check.
    """
    declared = content_length(resp.headers)
    if declared is not None and declared > MAX_BODY:
        return b"", True
    if resp.is_stream_consumed:  # built in memory already (httpx.MockTransport), decoded
        body = resp.content
        return (body[:SNIPPET_BYTES], True) if len(body) > MAX_BODY else (body, False)
    encoding = resp.headers.get("content-encoding", "")
    try:
        body, too_large = await _inflate.read_capped(resp.aiter_raw(), encoding, MAX_BODY)
    except (_inflate.UnsupportedEncodingError, zlib.error):
        raise httpx.DecodingError("undecodable body") from None  # a permanent reply problem
    return (body[:SNIPPET_BYTES], True) if too_large else (body, False)


def _classify(reply: Reply, path: str, log: FilteringBoundLogger) -> NotFound | PollFailed:
    """What a 4xx/5xx reply means for the poll (``request`` returns the others as they are)."""
    status = reply.status
    if status in (404, 410):
        return NotFound()
    if status in (401, 403):
        log.error("provider.auth_failed", status=status, path=path)
        return PollFailed(kind=FailureKind.CONFIG,
                          message=f"HTTP {status} from {path}: key rejected, check the config")
    if status in (429, 503):
        retry_after = retry_after_seconds(reply.headers.get("retry-after"))
        log.warning("provider.rate_limited", status=status, retry_after=retry_after, path=path)
        return PollFailed(kind=FailureKind.RATE_LIMITED, message=f"HTTP {status} from {path}",
                          retry_after=retry_after)
    log.error("provider.rejected", status=status, path=path)
    return PollFailed(kind=FailureKind.CONFIG,
                      message=f"HTTP {status} from {path}: the provider refused the request")


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Parse ``Retry-After`` (seconds or an HTTP-date) into seconds within [0, MAX_RETRY_AFTER]."""
    return parse_retry_after(value, time.time() if now is None else now, cap=MAX_RETRY_AFTER)


def content_length(headers: httpx.Headers) -> int | None:
    """The declared body size, if it is a plain non-negative integer."""
    value = headers.get("content-length", "").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None


# --------------------------------------------------------------------------- logging


def unparseable(
    log: FilteringBoundLogger, reason: str, path: str, body: bytes, headers: Mapping[str, str]
) -> PollFailed:
    """Log a reply we cannot read (with its first bytes) and turn it into a transient failure."""
    log.warning("provider.unparseable", reason=reason, path=path, body=snippet(body, headers))
    return PollFailed(kind=FailureKind.TRANSIENT,
                      message=f"unparseable reply from {path}: {reason}")


def snippet(body: bytes, headers: Mapping[str, str]) -> str:
    """The first bytes of a body as text, with anything we sent as a credential blanked out.

    Redaction runs on a wider window than is kept, so a key straddling the cut is caught too.
    """
    text = body[: SNIPPET_BYTES + 1024].decode("utf-8", "replace")
    for name, value in headers.items():
        if name.lower() in _NOT_CREDENTIALS:
            continue
        for secret in {value, value.rsplit(" ", 1)[-1]}:  # "Bearer <token>" and <token>
            if len(secret) >= 4:
                text = text.replace(secret, "[redacted]")
    return text[:SNIPPET_BYTES]


# --------------------------------------------------------------------------- ids and URLs


def check_token(call_id: str) -> str | None:
    """Why ``call_id`` is not a safe path segment, or None; the reason never echoes the id."""
    if len(call_id) <= _MAX_ID_LENGTH and _TOKEN.fullmatch(call_id) and call_id.strip("."):
        return None  # every rule below holds: skip the per-character scans (every poll)
    return next((reason for bad, reason in _ID_RULES if bad(call_id)), None)


_ID_RULES: tuple[tuple[Callable[[str], bool], str], ...] = (
    (lambda s: not s, "the call id is empty"),
    (lambda s: len(s) > _MAX_ID_LENGTH,
     f"the call id is longer than {_MAX_ID_LENGTH} characters"),
    (lambda s: any(ch.isspace() or not ch.isprintable() for ch in s),
     "the call id contains whitespace or control characters"),
    (lambda s: "/" in s, "the call id contains '/'"),
    (lambda s: not _TOKEN.fullmatch(s),
     "the call id may only contain letters, digits, '.', '_', ':' and '-'"),
    (lambda s: not s.strip("."), "the call id cannot be only dots"),
)


def check_uuid(call_id: str) -> str | None:
    """Like ``check_token``, and the id must also be a hyphenated UUID."""
    if (reason := check_token(call_id)) is not None:
        return reason
    if not _UUID.fullmatch(call_id):
        return "the call id must be a UUID like 3f2b8a1e-5c4d-4e6f-8a9b-0c1d2e3f4a5b"
    return None


def resolve_location(request_url: str, location: str) -> str:
    """An absolute Location as given, byte for byte; a relative one joined to the request URL.

    ``urljoin`` rather than ``httpx.URL.join``: the latter re-encodes, which breaks signatures.
    """
    if _SCHEME.match(location):
        return location
    return urljoin(request_url, location)


def same_origin(url: str, base_url: str) -> bool:
    """Whether ``url`` is on the provider's API itself (the only place our key may go)."""
    try:
        return _origin(url) == _origin(base_url)
    except ValueError:  # a port that is not a number, a broken IPv6 literal
        return False


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, parts.hostname, parts.port or _DEFAULT_PORTS.get(scheme)
