"""Connection limits uvicorn lacks: a deadline for each request head, and room for newcomers.

uvicorn's h11 protocol caps the size of a request head (``h11_max_incomplete_event_size``) and
closes idle keep-alive connections, but a connection that sends nothing, or a head one byte at
a time, stays open for ever, and ``limit_concurrency`` counts such connections: 500 slow-loris
connections turned every request, ``/healthz`` included, into a 503. So each connection is
wrapped (composition, through uvicorn's documented custom-protocol hook, ``Config(http=...)``):

* a request head must be complete within ``head_timeout`` seconds of the connection opening,
  or of the first byte after the previous response: a silent or trickling client is closed;
* past ``max_connections`` open connections, a new one evicts the connection that has waited
  longest for its request head, so a flood of idle connections cannot lock a probe out; only
  when every connection is busy with a real request is the newcomer closed.

Request bodies have their own deadline (``BodyCap``, 408); answered requests the keep-alive
timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import structlog
from uvicorn.protocols.http.h11_impl import H11Protocol

from worker.logbudget import LogBudget

log = structlog.get_logger("worker.api")

HEAD_END = b"\r\n\r\n"


@dataclass(kw_only=True, eq=False)
class ConnectionGuard:
    """The limits, and the connections of one server."""

    head_timeout: float = 10.0
    max_connections: int = 256
    open: set[Guarded] = field(default_factory=set)
    waiting: dict[Guarded, float] = field(default_factory=dict)  # -> when it began waiting
    closed_slow: int = 0  # closed for not sending a request head in time
    evicted: int = 0  # closed to make room for a new connection
    refused: int = 0  # closed at once: every connection was busy with a request
    budget: LogBudget = field(default_factory=LogBudget)

    def protocol(self) -> type[asyncio.Protocol]:
        """The class to hand uvicorn as ``Config(http=...)``."""
        guard = self

        class Protocol(Guarded):
            def __init__(self, **kwargs: Any) -> None:
                super().__init__(guard, H11Protocol(**kwargs))

        return Protocol

    def admit(self, newcomer: Guarded) -> bool:
        """Make room for ``newcomer``; False when there is none to make."""
        if len(self.open) < self.max_connections:
            return True
        if not self.waiting:
            self.refused += 1
            self._note("api.connection_refused", reason="every connection is busy")
            return False
        oldest = min(self.waiting, key=self.waiting.__getitem__)
        self.evicted += 1
        self._note("api.connection_evicted", reason="room for a new connection")
        oldest.close()
        return True

    def _note(self, event: str, **fields: object) -> None:
        if self.budget.allow():  # strangers cause these: a few lines, then counts
            log.warning(event, suppressed=self.budget.take_suppressed(), **fields)


class _Tap:
    """The transport as the wrapped protocol sees it: writes tell the guard a response went
    out (the next bytes begin a new request head)."""

    def __init__(self, transport: asyncio.Transport, wrote: Callable[[], None]) -> None:
        self._transport = transport
        self._wrote = wrote

    def write(self, data: bytes) -> None:
        self._wrote()
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class Guarded(asyncio.Protocol):
    """One connection: the h11 protocol inside, a head deadline around it."""

    def __init__(self, guard: ConnectionGuard, inner: H11Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.in_head = True  # waiting for (the rest of) a request head
        self.tail = b""  # the last bytes seen, for a head end split across reads
        self._idle = False  # a response went out: the next byte starts a new head
        self.admitted = False  # the inner protocol knows the connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if not self.guard.admit(self):
            self.transport.abort()
            return
        self.guard.open.add(self)
        self.admitted = True
        self._wait_for_head()
        self.inner.connection_made(cast(asyncio.Transport, _Tap(self.transport, self._wrote)))

    def data_received(self, data: bytes) -> None:
        if not self.in_head and self._idle:  # the first byte of the next request
            self._wait_for_head()
        if self.in_head:
            seen = self.tail + data
            if HEAD_END in seen:
                self._head_done()
            else:
                self.tail = seen[-3:]
        self.inner.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        self.guard.open.discard(self)
        if self.admitted:
            self.inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        self.inner.eof_received()
        return None  # close the transport: HTTP/1.1 has no half-closed requests

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def close(self) -> None:
        """Hang up; the connection stops counting now, not when the loop gets to it."""
        self._stop_waiting()
        self.guard.open.discard(self)
        if self.transport is not None:
            self.transport.close()

    # --------------------------------------------------------------------- the deadline

    def _wrote(self) -> None:
        self._idle = True

    def _wait_for_head(self) -> None:
        self._idle = False
        self.in_head = True
        self.tail = b""
        self.guard.waiting[self] = time.monotonic()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.guard.head_timeout, self._too_slow)

    def _head_done(self) -> None:
        self.in_head = False
        self.tail = b""
        self._stop_waiting()

    def _stop_waiting(self) -> None:
        self.guard.waiting.pop(self, None)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _too_slow(self) -> None:
        self.timer = None
        self.guard.closed_slow += 1
        self.guard._note("api.connection_too_slow",
                         seconds=self.guard.head_timeout)
        self.close()
