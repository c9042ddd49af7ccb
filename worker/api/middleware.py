"""The API's middleware, outermost first: observe (log, count, 500), paths, auth, body cap.

Pure ASGI classes, not ``BaseHTTPMiddleware``: they see every request before routing and
wrap ``receive`` without buffering anything.

* ``Observe`` logs ``api.request`` (method, route template, status, ms; never a header or a
  body), counts requests for /metrics, and turns any exception into ``500 {"error":
  "internal error"}`` logged as ``api.error``: a traceback never reaches the client.
* ``Paths`` refuses more than ``MAX_HEADERS`` headers (431), and routes on the raw path,
  each segment percent-decoded on its own: an encoded slash (``%2F``) stays inside one path
  parameter instead of changing which route matches; a segment that is not UTF-8 is a 400.
* ``BearerAuth``: ``Authorization: Bearer <[api] token>``, compared in constant time, read per
  request (a SIGHUP's new token applies at once), on every path but the open ones.
* ``BodyCap``: 413 past a path's limit (announced by Content-Length or counted while it
  arrives), 408 when the body takes longer than ``BODY_TIMEOUT`` (a trickling client must not
  hold a task).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Collection
from urllib.parse import unquote_to_bytes

import anyio
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.api.runtime import ApiStats
from worker.api.web import ROUTE_KEY, HttpError, error_response
from worker.secrets import Secret

log = structlog.get_logger("worker.api")

BODY_TIMEOUT = 30.0
MAX_HEADERS = 100  # the head's size is capped by the server (32 KiB); this caps their number
_CHALLENGE = {"www-authenticate": 'Bearer realm="callwatch"'}
_BAD_TOKEN = {"www-authenticate": 'Bearer realm="callwatch", error="invalid_token"'}


class Observe:
    """Request logs, request counts, and the last word on any exception (500)."""

    def __init__(self, app: ASGIApp, stats: ApiStats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off and websockets are refused by uvicorn
            return
        started = time.perf_counter()
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            log.exception("api.error", method=scope["method"], route=scope.get(ROUTE_KEY))
            if status == 0:
                status = 500
                await error_response(500, "internal error")(scope, receive, send)
        route = str(scope.get(ROUTE_KEY, "unmatched"))
        self.stats.requests[(route, status)] += 1
        log.debug("api.request", method=scope["method"], route=route, status=status,
                  ms=round((time.perf_counter() - started) * 1000, 2))


def reencoded(raw: bytes) -> str:
    """``raw_path`` with each segment decoded, then only ``%`` and ``/`` encoded again."""
    parts = []
    for part in raw.split(b"/"):
        text = unquote_to_bytes(part).decode("utf-8")  # UnicodeDecodeError: the caller's 400
        parts.append(text.replace("%", "%25").replace("/", "%2F"))
    return "/".join(parts)


class Paths:
    """Route on segments decoded one by one (see the module docstring); refuse more than
    ``MAX_HEADERS`` headers (431) before anything reads them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if len(scope["headers"]) > MAX_HEADERS:
            await error_response(431, f"more than {MAX_HEADERS} request headers")(
                scope, receive, send)
            return
        raw = scope.get("raw_path") or str(scope["path"]).encode()
        try:
            scope["path"] = reencoded(bytes(raw).split(b"?", 1)[0])
        except UnicodeDecodeError:
            await error_response(400, "the request path is not valid UTF-8")(scope, receive,
                                                                               send)
            return
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The last value of header ``name`` (lower case)."""
    found = None
    for key, value in scope["headers"]:
        if key == name:
            found = bytes(value)
    return found


class BearerAuth:
    """401 unless the request carries the token (paths in ``open_paths`` need none)."""

    def __init__(self, app: ASGIApp, token: Callable[[], Secret | None],
                 open_paths: Collection[str]) -> None:
        self.app = app
        self.token = token
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(_header(scope, b"authorization"))
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await error_response(401, refusal.message, refusal.headers)(scope, receive, send)

    def refusal(self, given: bytes | None) -> HttpError | None:
        """Why ``given`` (the Authorization header) is refused; None when it is accepted."""
        if given is None:
            return HttpError(401, "missing Authorization: Bearer <token> header", _CHALLENGE)
        scheme, _, credentials = given.partition(b" ")
        if scheme.lower() != b"bearer" or not credentials.strip():
            return HttpError(401, "the Authorization header must be 'Bearer <token>'",
                             _CHALLENGE)
        token = self.token()
        if token is None or not hmac.compare_digest(credentials.strip(),
                                                    token.reveal().encode()):
            return HttpError(401, "wrong bearer token", _BAD_TOKEN)
        return None


class BodyCap:
    """413 past ``limit_for(path)`` bytes, 408 past ``BODY_TIMEOUT`` seconds."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limit_for(str(scope["path"]))
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await error_response(413, f"request body larger than {limit} bytes")(
                scope, receive, send)
            return
        deadline = time.monotonic() + BODY_TIMEOUT
        timeout = BODY_TIMEOUT
        size = 0

        async def capped() -> Message:
            nonlocal size
            with anyio.move_on_after(deadline - time.monotonic()):
                message = await receive()
                size += len(message.get("body", b""))
                if size > limit:
                    raise HttpError(413, f"request body larger than {limit} bytes")
                return message
            raise HttpError(408, f"request body not received within {timeout:g} s")

        await self.app(scope, capped, send)
