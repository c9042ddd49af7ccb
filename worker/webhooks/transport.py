"""One webhook POST, bounded in time and memory whatever the receiver does.

* Time: one wall-clock deadline (``timeout``) covers connecting, sending and the answer's
  status line, so a receiver that trickles a byte a second cannot stretch an attempt.
* Memory: the reply is streamed and only its first ``REPLY_KEEP`` bytes are read (kept for
  the attempts log); a 50 MB reply costs 4 KiB, and its connection is closed rather than
  drained. ``Accept-Encoding: identity`` keeps a compressed reply from expanding in memory.
* A reply whose status arrived in time counts, even if its body then stalls or breaks off:
  the receiver has answered, the rest is only for the log.
* Redirects are never followed (the client is built with ``follow_redirects=False``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio
import httpx

from worker import __version__
from worker.http_pool import ShardedTransport
from worker.webhooks.policy import Outcome, parse_retry_after

REPLY_KEEP = 4096


@dataclass(frozen=True, kw_only=True, slots=True)
class Reply:
    """What one POST got: the policy's ``Outcome`` plus the log's details."""

    outcome: Outcome
    latency: float
    reply: bytes


def client(max_connections: int) -> httpx.AsyncClient:
    """The relay's own client, reused for every delivery; redirects are not followed.

    Its connections live in small pools (``worker.http_pool``, as the daemon's client): in
    one pool of a few dozen connections httpcore's bookkeeping costs more CPU than the
    request itself (``bench/relay.py`` measures it). The relay keeps at most
    ``max_connections`` requests in flight; idle keep-alive connections close after 5 s.
    """
    return httpx.AsyncClient(
        headers={"User-Agent": f"callwatch/{__version__}", "Accept-Encoding": "identity"},
        follow_redirects=False,
        trust_env=False,  # no proxy from the environment: endpoints are configured explicitly
        transport=ShardedTransport(max_connections=max_connections),
    )


async def post(http: httpx.AsyncClient, url: str, *, body: bytes, headers: dict[str, str],
               time_limit: float, now: float) -> Reply:
    """POST ``body`` to ``url`` within ``time_limit`` seconds; never raises for network
    trouble. ``now`` (POSIX seconds) turns a dated ``Retry-After`` into seconds."""
    started = time.perf_counter()
    status: int | None = None
    retry_after: float | None = None
    error: str | None = None
    kept = bytearray()
    with anyio.move_on_after(time_limit):
        try:
            async with http.stream("POST", url, content=body, headers=headers,
                                   timeout=httpx.Timeout(time_limit)) as reply:
                status = reply.status_code
                retry_after = parse_retry_after(reply.headers.get("retry-after"), now)
                async for chunk in reply.aiter_raw():
                    kept += chunk[:REPLY_KEEP - len(kept)]
                    if len(kept) >= REPLY_KEEP:
                        break  # leaving the block closes the connection; nothing more is read
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
