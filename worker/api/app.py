"""The HTTP API as one ASGI app: routes, bearer auth, JSON errors, request logs.

Every answer is JSON (``/metrics`` aside), and no exception escapes as a traceback: a handler
bug is logged as ``api.error`` and answered ``500 {"error": "internal error"}``.

Auth: ``Authorization: Bearer <[api] token>`` on every route except ``/healthz`` (probes carry
no secrets) and the Ultravox webhook (Ultravox cannot send our token; its HMAC signature is the
proof there). ``/openapi.json`` needs the token too: the document is public in the repository,
so serving it without auth would help no one but a scanner fingerprinting the daemon.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from functools import partial
from importlib import resources

import structlog

from worker.api import calls, health, listing, metrics, ultravox
from worker.api.asgi import (
    ClientGone,
    Handler,
    Headers,
    HttpError,
    Receive,
    Reply,
    Request,
    Route,
    Router,
    Scope,
    Send,
    error_reply,
    path_segments,
)
from worker.api.runtime import ApiRuntime, Context

log = structlog.get_logger("worker.api")

_CHALLENGE: Headers = ((b"www-authenticate", b'Bearer realm="callwatch"'),)
_BAD_TOKEN: Headers = ((b"www-authenticate", b'Bearer realm="callwatch", error="invalid_token"'),)
ContextHandler = Callable[[Context, Request], Awaitable[Reply]]


def openapi_document() -> bytes:
    """``docs/openapi.json``, shipped inside the package (``worker/api/openapi.json``)."""
    return resources.files("worker.api").joinpath("openapi.json").read_bytes()


def routes(ctx: Context) -> list[Route]:
    """Every route the API serves; docs/openapi.json must describe each (a test checks)."""
    document = openapi_document()

    async def openapi(_: Request) -> Reply:
        return Reply(200, document)

    def bind(handler: ContextHandler) -> Handler:
        return partial(handler, ctx)

    return [
        Route("POST", "/v1/calls", bind(calls.track)),
        Route("GET", "/v1/calls", bind(listing.list_calls)),
        Route("GET", "/v1/calls/{provider}/{call_id}", bind(calls.get)),
        Route("DELETE", "/v1/calls/{provider}/{call_id}", bind(listing.untrack)),
        Route("POST", "/v1/providers/ultravox/webhook", bind(ultravox.webhook), auth=False),
        Route("GET", "/healthz", bind(health.healthz), auth=False),
        Route("GET", "/metrics", bind(metrics.metrics)),
        Route("GET", "/openapi.json", openapi),
    ]


class ApiApp:
    """The ASGI callable the server runs."""

    def __init__(self, runtime: ApiRuntime, *, clock: Callable[[], float] = time.time) -> None:
        self.ctx = Context(runtime=runtime, clock=clock)
        self.router = Router(routes(self.ctx))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off and websockets are refused by the server
            return
        started = time.perf_counter()
        route, reply = await self._answer(Request(scope, receive))
        if reply is None:
            return
        # No Content-Length on a 204 (RFC 9110 15.3.5 forbids it).
        out = [*([] if reply.status == 204 else
                 [(b"content-length", str(len(reply.body)).encode())]), *reply.headers]
        if reply.content_type is not None:
            out.append((b"content-type", reply.content_type))
        out.append((b"cache-control", b"no-store"))
        await send({"type": "http.response.start", "status": reply.status, "headers": out})
        await send({"type": "http.response.body", "body": reply.body})
        name = route.template if route is not None else "unmatched"
        self.ctx.stats.requests[(name, reply.status)] += 1
        log.debug("api.request", method=scope["method"], route=name, status=reply.status,
                  ms=round((time.perf_counter() - started) * 1000, 2))

    async def _answer(self, request: Request) -> tuple[Route | None, Reply | None]:
        """The route that matched (if any) and the reply; no reply when the client left."""
        route: Route | None = None
        try:
            route, request.params = self.router.match(request.method,
                                                      path_segments(request.scope))
            if route.auth:
                self._authorize(request)
            return route, await route.handler(request)
        except HttpError as exc:
            return route, error_reply(exc.status, exc.message, exc.headers)
        except ClientGone:
            return route, None
        except Exception:
            log.exception("api.error", method=request.method,
                          route=route.template if route else None)
            return route, error_reply(500, "internal error")

    def _authorize(self, request: Request) -> None:
        """401 unless the request carries the configured bearer token (compared in constant
        time; read per request, so a reload's new token applies at once)."""
        token = self.ctx.runtime.config.api.token
        given = request.header(b"authorization")
        if given is None:
            raise HttpError(401, "missing Authorization: Bearer <token> header", _CHALLENGE)
        scheme, _, credentials = given.partition(b" ")
        if scheme.lower() != b"bearer" or not credentials.strip():
            raise HttpError(401, "the Authorization header must be 'Bearer <token>'", _CHALLENGE)
        if token is None or not hmac.compare_digest(credentials.strip(),
                                                    token.reveal().encode()):
            raise HttpError(401, "wrong bearer token", _BAD_TOKEN)
