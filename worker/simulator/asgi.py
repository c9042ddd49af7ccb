"""A minimal ASGI toolkit: typed aliases, a request view, a path router and reply senders.

The simulator serves a handful of fixed endpoints, and benchmarks compare the daemon polling it
against a bare HTTP loop: a framework would cost more per request than the work itself. So it
keeps this lean router on purpose, while the daemon's own API runs on Starlette
(``worker/api``): the simulator is test and benchmark equipment, and its per-request cost is
part of what ``bench.polling`` measures.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio import CancelScope

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_TYPE = b"application/json"


@dataclass(slots=True)
class Request:
    """The parts of an ASGI HTTP scope the simulator reads, plus the router's path parameters."""

    scope: Scope
    receive: Receive
    params: dict[str, str] = field(default_factory=dict)
    disconnected: bool = False  # set by body() when the client left mid-request
    fault: Any = None  # the fault rule picked for this request, for handlers that act it out

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    @property
    def path(self) -> str:
        return str(self.scope["path"])

    @property
    def raw_path(self) -> bytes:
        """The path exactly as the client sent it (signed URLs are checked byte for byte)."""
        raw = self.scope.get("raw_path")
        return bytes(raw) if raw else self.path.encode()

    @property
    def query(self) -> bytes:
        return bytes(self.scope.get("query_string", b""))

    def header(self, name: bytes) -> str | None:
        """The last value of header ``name`` (lower case), decoded as latin-1."""
        found: bytes | None = None
        for key, value in self.scope["headers"]:
            if key == name:
                found = value
        return None if found is None else found.decode("latin-1")

    def headers(self) -> list[tuple[str, str]]:
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.scope["headers"]]

    async def body(self, limit: int = 16 * 1024 * 1024) -> bytes:
        """Read the whole request body, up to ``limit`` bytes (the rest is dropped)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] != "http.request":
                self.disconnected = True  # the client went away before the body was complete
                break
            chunk = bytes(message.get("body", b""))
            if size < limit:
                chunks.append(chunk[: limit - size])
            size += len(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def json(self) -> Any:
        """The body parsed as JSON; an empty body is an empty object."""
        raw = await self.body()
        return json.loads(raw) if raw.strip() else {}


_PARAM = re.compile(r"\{(\w+)\}")


class Router:
    """Maps (method, path) to a handler; ``{name}`` in a pattern matches one path segment."""

    def __init__(self) -> None:
        self._routes: list[tuple[frozenset[str], re.Pattern[str], Any]] = []

    def add(self, methods: str | Iterable[str], pattern: str, handler: Any) -> None:
        names = {methods} if isinstance(methods, str) else set(methods)
        if "GET" in names:
            names.add("HEAD")
        regex = "^" + _PARAM.sub(r"(?P<\1>[^/]+)", pattern) + "$"
        self._routes.append((frozenset(names), re.compile(regex), handler))

    def match(self, method: str, path: str) -> tuple[Any, dict[str, str]] | int:
        """The handler and its parameters, or the status to answer (404 or 405)."""
        status = 404
        for methods, regex, handler in self._routes:
            found = regex.match(path)
            if found is None:
                continue
            if method in methods:
                return handler, found.groupdict()
            status = 405
        return status


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


async def send_body(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes | None = JSON_TYPE,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Send a complete reply with a Content-Length."""
    out: Headers = [(b"content-length", str(len(body)).encode())]
    if content_type is not None:
        out.append((b"content-type", content_type))
    out.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(
    send: Send, status: int, obj: Any, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    await send_body(send, status, json_bytes(obj), JSON_TYPE, headers)


async def pause(receive: Receive, seconds: float) -> bool:
    """Wait ``seconds`` before answering; False when the client hung up meanwhile."""
    with anyio.move_on_after(seconds):
        while (await receive())["type"] != "http.disconnect":
            pass
        return False
    return True


async def cancel_on_disconnect(receive: Receive, scope: CancelScope) -> None:
    """Cancel ``scope`` once the client is gone, so a streamed reply stops being generated.

    uvicorn answers ``receive`` with ``http.disconnect`` also once the reply is complete, which
    is harmless: by then there is nothing left to cancel.
    """
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
