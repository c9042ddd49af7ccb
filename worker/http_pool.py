"""An httpx transport made of many small connection pools instead of one large one.

Why: httpcore's connection pool does work quadratic in the number of connections it holds
on every request and every response close (``_assign_requests_to_connections`` walks every
connection, and for each idle one builds a list over all of them again). With the
daemon's default 3 x 32 poll slots the shared pool holds about 100 connections, and a poll
then cost 14 to 42 ms of CPU, against about 1 ms with pools of two connections (measured
with ``bench/polling.py``'s bare loop; see docs/benchmarks.md). Splitting the same
connections over small pools keeps that work constant.

How: each origin (scheme, host, port) gets its own shards, created as they are needed,
each an ``httpx.AsyncHTTPTransport`` of at most ``per_shard`` connections, all sharing one
SSL context. A request goes to the origin's least busy shard; a new shard is opened while
every shard of the origin is full and the origin has fewer than
``ceil(max_connections / per_shard)``. A request counts as in flight until its response is
closed, not merely until its headers arrive. Shards of origins unused for ``idle_close``
seconds are closed, so download hosts seen once do not keep sockets open forever.
"""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx

Origin = tuple[str, str, int | None]


@dataclass(eq=False)
class _Shard:
    transport: httpx.AsyncHTTPTransport
    in_flight: int = 0


@dataclass(eq=False)
class _OriginShards:
    shards: list[_Shard] = field(default_factory=list)
    last_used: float = 0.0


class _CountedStream(httpx.AsyncByteStream):
    """A response body that tells its shard when it is closed (once)."""

    def __init__(self, inner: httpx.AsyncByteStream, done: Callable[[], None]) -> None:
        self._inner = inner
        self._done: Callable[[], None] | None = done

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._release()

    def _release(self) -> None:
        if self._done is not None:
            done, self._done = self._done, None
            done()


def _async_body(response: httpx.Response) -> httpx.AsyncByteStream:
    stream = response.stream
    if not isinstance(stream, httpx.AsyncByteStream):  # an async transport's never is
        raise TypeError(f"not an async body: {type(stream).__name__}")
    return stream


class ShardedTransport(httpx.AsyncBaseTransport):
    """``max_connections`` per origin, in pools of ``per_shard`` (see the module docstring)."""

    def __init__(self, *, max_connections: int, per_shard: int = 2,
                 keepalive_expiry: float = 5.0, idle_close: float = 300.0,
                 verify: ssl.SSLContext | bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        # A cap below one shard's size makes one smaller shard (else the cap would be per_shard).
        self._per_shard = max(1, min(per_shard, max_connections))
        self._max_shards = max(1, math.ceil(max_connections / self._per_shard))
        self._limits = httpx.Limits(max_connections=self._per_shard,
                                    max_keepalive_connections=self._per_shard,
                                    keepalive_expiry=keepalive_expiry)
        self._ssl = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(
            verify=verify)
        self._idle_close = idle_close
        self._clock = clock
        self._origins: dict[Origin, _OriginShards] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send on the origin's least busy pool; the slot is held until the body is closed."""
        await self._close_idle_origins()
        shard = self._pick((request.url.scheme, request.url.host, request.url.port))
        shard.in_flight += 1

        def done() -> None:
            shard.in_flight -= 1

        try:
            response = await shard.transport.handle_async_request(request)
            stream = _async_body(response)
        except BaseException:
            done()
            raise
        return httpx.Response(status_code=response.status_code, headers=response.headers,
                              stream=_CountedStream(stream, done), extensions=response.extensions)

    def _pick(self, origin: Origin) -> _Shard:
        found = self._origins.setdefault(origin, _OriginShards())
        found.last_used = self._clock()
        best = min(found.shards, key=lambda s: s.in_flight, default=None)
        if best is None or (best.in_flight >= self._per_shard
                            and len(found.shards) < self._max_shards):
            best = _Shard(transport=httpx.AsyncHTTPTransport(verify=self._ssl,
                                                             limits=self._limits))
            found.shards.append(best)
        return best

    async def _close_idle_origins(self) -> None:
        """Close the pools of origins nobody asked for in ``idle_close`` seconds."""
        cutoff = self._clock() - self._idle_close
        stale = [origin for origin, found in self._origins.items()
                 if found.last_used < cutoff and not any(s.in_flight for s in found.shards)]
        for origin in stale:
            for shard in self._origins.pop(origin).shards:
                await shard.transport.aclose()

    def shard_count(self) -> int:
        """How many pools are open (for tests and benchmarks)."""
        return sum(len(found.shards) for found in self._origins.values())

    async def aclose(self) -> None:
        origins, self._origins = self._origins, {}
        for found in origins.values():
            for shard in found.shards:
                await shard.transport.aclose()
