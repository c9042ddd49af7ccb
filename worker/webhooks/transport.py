"""One webhook POST, bounded in time and memory whatever the receiver does.

* Time: one wall-clock deadline (``time_limit``) covers connecting, sending and the answer's
  status line, so a receiver that trickles a byte a second cannot stretch an attempt.
* Memory: the reply is streamed and only its first ``REPLY_KEEP`` bytes are read (kept for
  the attempts log); a 50 MB reply costs 4 KiB, and its connection is closed rather than
  drained. ``Accept-Encoding: identity`` keeps a compressed reply from expanding in memory.
* A reply whose status arrived in time counts, even if its body then stalls or breaks off:
  the receiver has answered, the rest is only for the log.
* Redirects are never followed: a 3xx is simply the answer.

Requests go straight to one shared httpx transport (the connection pools), not through an
``httpx.AsyncClient``: a relay needs none of the client's layers (cookies, auth, redirects,
URL merging), and skipping them saves about a fifth of the CPU per delivery
(``bench/relay.py``). It also means an endpoint cannot set a cookie that we would send back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio
import httpx

from worker import __version__
from worker.http_aio import DEFAULT, AioTransport, Kind
from worker.http_pool import ShardedTransport
from worker.retry_after import parse_retry_after
from worker.webhooks.policy import MAX_RETRY_AFTER, Outcome

REPLY_KEEP = 4096
_HEADERS = {"user-agent": f"callwatch/{__version__}", "accept-encoding": "identity"}


@dataclass(frozen=True, kw_only=True, slots=True)
class Reply:
    """What one POST got: the policy's ``Outcome`` plus the log's details."""

    outcome: Outcome
    latency: float
    reply: bytes


def connection_pool(max_connections: int, kind: Kind = DEFAULT) -> httpx.AsyncBaseTransport:
    """The relay's connections, reused for every delivery (``async with`` closes them).

    ``aiohttp``: one aiohttp pool (``worker.http_aio``). ``httpx``: small httpcore pools
    (``worker.http_pool``): in one pool of a few dozen connections httpcore's bookkeeping
    costs more CPU than the request itself. Either way at most ``max_connections``
    connections per origin; idle keep-alive connections close after 5 s. No proxy is
    taken from the environment: endpoints are configured.
    """
    if kind == "aiohttp":
        return AioTransport(max_connections=max_connections)
    return ShardedTransport(max_connections=max_connections)


async def post(pool: httpx.AsyncBaseTransport, url: str, *, body: bytes,
               headers: dict[str, str], time_limit: float, now: float) -> Reply:
    """POST ``body`` to ``url`` within ``time_limit`` seconds; never raises for network
    trouble. ``now`` (POSIX seconds) turns a dated ``Retry-After`` into seconds."""
    started = time.perf_counter()
    status: int | None = None
    retry_after: float | None = None
    error: str | None = None
    kept = bytearray()
    with anyio.move_on_after(time_limit):
        try:
            request = httpx.Request("POST", url, content=body, headers={**_HEADERS, **headers},
                                    extensions={"timeout": dict.fromkeys(
                                        ("connect", "read", "write", "pool"), time_limit)})
            reply = await pool.handle_async_request(request)
            try:
                status = reply.status_code
                retry_after = parse_retry_after(reply.headers.get("retry-after"), now,
                                                cap=MAX_RETRY_AFTER)
                async for chunk in reply.aiter_raw():
                    kept += chunk[:REPLY_KEEP - len(kept)]
                    if len(kept) >= REPLY_KEEP:
                        break  # closing now drops the connection; nothing more is read
            finally:
                await reply.aclose()
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            error = describe(exc)
    if status is None and error is None:
        error = f"no answer within {time_limit:g} s"
    latency = time.perf_counter() - started
    outcome = Outcome(status=status, error=None if status is not None else error,
                      retry_after=retry_after)
    return Reply(outcome=outcome, latency=latency, reply=bytes(kept))


def describe(exc: httpx.HTTPError | httpx.InvalidURL) -> str:
    """``ConnectError: [Errno 111] Connection refused``, one line, without the URL's secrets."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    name = type(exc).__name__
    return f"{name}: {text[:200]}" if text else name
