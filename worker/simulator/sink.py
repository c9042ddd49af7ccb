"""The webhook sink: records every request it receives and misbehaves on demand.

Behaviour is set per path (``/hooks/a`` may answer 410 while ``/hooks/b`` is fine) or for all
paths, and can be changed while the daemon runs::

    sim.sink.behave(fail_next=3)                        # the next 3 requests get 500
    sim.sink.behave("/hooks/gone", status=410)           # that endpoint is gone for good
    sim.sink.behave(status=429, retry_after=2)           # throttled, with Retry-After
    sim.sink.behave(status=429, retry_after="\u00b2")      # ... with a malformed one
    sim.sink.behave(delay=20)                            # slower than the daemon's timeout
    sim.sink.behave(huge_reply=64 * 2**20)               # a 64 MiB reply body
    sim.sink.behave(status=307, location="/hooks/other") # a redirect (must not be followed)
    sim.sink.behave(stall=True)                          # the status, then a body that never ends
    await sim.sink_down(); ...; await sim.sink_up()      # connection refused meanwhile
    await sim.sink.wait_for(lambda reqs: len(reqs) >= 4, timeout=5)
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from worker.simulator.asgi import (
    Headers,
    Receive,
    Request,
    Scope,
    Send,
    cancel_on_disconnect,
    pause,
    send_json,
)

_PIECE = b"x" * (1 << 20)


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as it arrived, and the status the sink answered it with."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    received_at: float
    status: int

    def header(self, name: str) -> str | None:
        """The last value of a header, case-insensitively."""
        wanted = name.lower()
        found = None
        for key, value in self.headers:
            if key.lower() == wanted:
                found = value
        return found

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(kw_only=True)
class Behaviour:
    """How the sink answers; ``fail_next`` counts down with each request it fails."""

    fail_next: int = 0
    fail_status: int = 500
    status: int = 200
    retry_after: int | str | None = None  # sent as-is with a 429 or 503 (a str: any text)
    delay: float = 0.0  # seconds before answering
    huge_reply: int = 0  # reply body size in bytes; 0: a small JSON reply
    location: str | None = None  # sent as Location (with a 3xx status)
    stall: bool = False  # send the status and one byte, then nothing until the client leaves


class Sink:
    """The sink's ASGI app and everything it has seen."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.requests: list[ReceivedRequest] = []
        self.default = Behaviour()
        self.paths: dict[str, Behaviour] = {}
        self._waiters: set[anyio.Event] = set()

    def behave(self, path: str | None = None, **changes: Any) -> Behaviour:
        """Change how ``path`` (or every path without its own behaviour) is answered."""
        current = self.default if path is None else self.paths.get(path, self.default)
        updated = dataclasses.replace(current, **changes)
        if path is None:
            self.default = updated
        else:
            self.paths[path] = updated
        return updated

    def reset(self) -> None:
        """Forget every request and behaviour."""
        self.requests.clear()
        self.default = Behaviour()
        self.paths.clear()

    async def wait_for(
        self,
        predicate: Callable[[list[ReceivedRequest]], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - a deadline argument reads best in tests
    ) -> list[ReceivedRequest]:
        """Wait until ``predicate(requests)`` holds; TimeoutError (saying what came) if not."""
        try:
            with anyio.fail_after(timeout):
                while not predicate(self.requests):
                    event = anyio.Event()
                    self._waiters.add(event)
                    try:
                        await event.wait()
                    finally:
                        self._waiters.discard(event)
        except TimeoutError:
            seen = [(r.method, r.path, r.status) for r in self.requests]
            raise TimeoutError(f"sink condition not met in {timeout}s; received {seen}") from None
        return list(self.requests)

    def _answer(self, path: str) -> tuple[Behaviour, int]:
        behaviour = self.paths.get(path, self.default)
        if behaviour.fail_next > 0:
            behaviour.fail_next -= 1
            return behaviour, behaviour.fail_status
        return behaviour, behaviour.status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        behaviour, status = self._answer(request.path)
        if request.disconnected:
            status = 499  # nginx's "client closed request": no receiver would accept this body
        self.requests.append(
            ReceivedRequest(
                method=request.method,
                path=request.path,
                query=request.query.decode("latin-1"),
                headers=tuple(request.headers()),
                body=body,
                received_at=self.clock(),
                status=status,
            )
        )
        for event in self._waiters:
            event.set()
        if behaviour.delay and not await pause(receive, behaviour.delay):
            return
        headers: Headers = []
        if status in {429, 503} and behaviour.retry_after is not None:
            headers.append((b"retry-after", str(behaviour.retry_after).encode()))
        if behaviour.location is not None:
            headers.append((b"location", behaviour.location.encode()))
        if behaviour.stall:
            await _stall(send, receive, status, headers)
        elif behaviour.huge_reply:
            await _send_huge(send, receive, status, behaviour.huge_reply, headers)
        else:
            await send_json(send, status, {"received": status < 300}, headers)


async def _send_huge(
    send: Send, receive: Receive, status: int, size: int, headers: Headers
) -> None:
    headers = [*headers, (b"content-length", str(size).encode())]
    headers.append((b"content-type", b"text/plain"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    async with anyio.create_task_group() as tg:
        tg.start_soon(cancel_on_disconnect, receive, tg.cancel_scope)
        left = size
        while left > 0:
            piece = _PIECE if left >= len(_PIECE) else _PIECE[:left]
            left -= len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": left > 0})
        tg.cancel_scope.cancel()


async def _stall(send: Send, receive: Receive, status: int, headers: Headers) -> None:
    """Promise a 1 MiB body, send one byte of it, then wait for the client to give up."""
    headers = [*headers, (b"content-length", str(1 << 20).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"{", "more_body": True})
    while (await receive())["type"] != "http.disconnect":
        pass
