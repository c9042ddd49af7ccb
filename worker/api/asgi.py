"""A minimal ASGI toolkit for the API: typed aliases, a request view, a router and replies.

The API has seven fixed routes and must never leak a traceback or read an unbounded body; a
framework would bring more surface than routes. Handlers return a ``Reply`` value instead of
sending, so the app alone decides how (and whether) anything reaches the socket.

Routing works on ``raw_path`` split at ``/`` and percent-decoded per segment, so an encoded
slash (``%2F``) stays inside one path parameter instead of changing which route matches.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

import anyio

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = tuple[tuple[bytes, bytes], ...]

JSON_TYPE = b"application/json"
BODY_TIMEOUT = 30.0


class HttpError(Exception):
    """Stop handling and answer ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: Headers = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class ClientGone(Exception):  # noqa: N818 - a condition, not an error of ours
    """The client disconnected before its request body was complete: answer nothing."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete response; the app adds Content-Length and sends it."""

    status: int
    body: bytes
    content_type: bytes | None = JSON_TYPE
    headers: Headers = ()


def json_bytes(obj: Any) -> bytes:
    """Compact JSON, ASCII-only: safe for any string we hold, even an odd one."""
    return json.dumps(obj, separators=(",", ":")).encode()


def json_reply(status: int, obj: Any, headers: Headers = ()) -> Reply:
    return Reply(status, json_bytes(obj), JSON_TYPE, headers)


def error_reply(status: int, message: str, headers: Headers = ()) -> Reply:
    return json_reply(status, {"error": message}, headers)


@dataclass(slots=True)
class Request:
    """The parts of an ASGI HTTP scope the API reads, plus the router's path parameters."""

    scope: Scope
    receive: Receive
    params: dict[str, str] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    def header(self, name: bytes) -> bytes | None:
        """The last value of header ``name`` (lower case), as raw bytes."""
        found: bytes | None = None
        for key, value in self.scope["headers"]:
            if key == name:
                found = bytes(value)
        return found

    async def body(self, limit: int) -> bytes:
        """The whole body; 413 past ``limit`` bytes (told by Content-Length or counted), 408
        when it takes longer than ``BODY_TIMEOUT`` (a client trickling bytes holds a task)."""
        declared = self.header(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HttpError(413, f"request body larger than {limit} bytes")
        with anyio.move_on_after(BODY_TIMEOUT):
            return await self._read(limit)
        raise HttpError(408, f"request body not received within {BODY_TIMEOUT:g} s")

    async def _read(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] != "http.request":
                raise ClientGone
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > limit:
                raise HttpError(413, f"request body larger than {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


Handler = Callable[[Request], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Route:
    """One method + path template; ``{name}`` matches one (decoded) segment."""

    method: str
    template: str
    handler: Handler
    auth: bool = True  # bearer token required

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.template.strip("/").split("/"))


def path_segments(scope: Scope) -> tuple[str, ...]:
    """The request path's segments, each percent-decoded on its own; 400 if not UTF-8."""
    raw = scope.get("raw_path") or str(scope["path"]).encode()
    raw = bytes(raw).split(b"?", 1)[0]
    try:
        return tuple(unquote_to_bytes(part).decode("utf-8")
                     for part in raw.strip(b"/").split(b"/"))
    except UnicodeDecodeError:
        raise HttpError(400, "the request path is not valid UTF-8") from None


class Router:
    """Maps (method, path) to a route; answers 404 or 405 (with Allow) otherwise."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)

    def match(self, method: str, segments: tuple[str, ...]) -> tuple[Route, dict[str, str]]:
        allowed: list[str] = []
        for route in self.routes:
            params = _match(route.segments, segments)
            if params is None:
                continue
            if route.method == method:
                return route, params
            allowed.append(route.method)
        if allowed:
            raise HttpError(405, f"method {method} not allowed here",
                            ((b"allow", ", ".join(allowed).encode()),))
        raise HttpError(404, "not found")


def _match(template: tuple[str, ...], segments: tuple[str, ...]) -> dict[str, str] | None:
    if len(template) != len(segments):
        return None
    params: dict[str, str] = {}
    for want, got in zip(template, segments, strict=True):
        if want.startswith("{") and want.endswith("}"):
            if not got:
                return None
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params
