"""The HTTP API as one Starlette app: routes, bearer auth, body caps, JSON errors, logs.

Every answer is JSON (``/metrics`` aside), and no exception escapes as a traceback: a handler
bug is logged as ``api.error`` and answered ``500 {"error": "internal error"}``.

Auth: ``Authorization: Bearer <[api] token>`` on every path except ``/healthz`` (probes carry
no secrets) and the Ultravox webhook (Ultravox cannot send our token; its HMAC signature is the
proof there). ``/openapi.json`` needs the token too: the document is public in the repository,
so serving it without auth would help no one but a scanner fingerprinting the daemon. Auth
runs before routing, so without the token an unknown path is a 401, not a 404: the API does
not tell strangers which routes exist.

A new route is one ``path(...)`` line in ``routes()`` (and its entry in docs/openapi.json; a
test holds the two equal). A new method on an existing path is one more keyword there.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from worker.api import calls, health, metrics, ultravox
from worker.api.middleware import BearerAuth, BodyCap, Observe, Paths
from worker.api.runtime import ApiRuntime, Context
from worker.api.web import JSON_TYPE, HttpError, error_response, path

BODY_LIMIT = calls.BODY_LIMIT  # 64 KiB
WEBHOOK_PATH = "/v1/providers/ultravox/webhook"
OPEN_PATHS = ("/healthz", WEBHOOK_PATH)
ContextHandler = Callable[[Context, Request], Awaitable[Response]]


def openapi_document() -> bytes:
    """``docs/openapi.json``, shipped inside the package (``worker/api/openapi.json``)."""
    return resources.files("worker.api").joinpath("openapi.json").read_bytes()


def routes(ctx: Context, exporter: metrics.Metrics) -> list[BaseRoute]:
    """Every route the API serves; docs/openapi.json must describe each (a test checks)."""
    document = openapi_document()

    async def openapi(_: Request) -> Response:
        return Response(document, 200, media_type=JSON_TYPE)

    async def scrape(request: Request) -> Response:
        return await metrics.metrics(ctx, request, exporter)

    def bind(handler: ContextHandler) -> Callable[[Request], Awaitable[Response]]:
        async def bound(request: Request) -> Response:
            return await handler(ctx, request)
        return bound

    return [
        path("/v1/calls", POST=bind(calls.track)),
        path("/v1/calls/{provider}/{call_id}", GET=bind(calls.get)),
        path(WEBHOOK_PATH, POST=bind(ultravox.webhook)),
        path("/healthz", GET=bind(health.healthz)),
        path("/metrics", GET=scrape),
        path("/openapi.json", GET=openapi),
    ]


def body_limit(request_path: str) -> int:
    """The webhook's call object carries summaries and metadata: it gets 1 MiB."""
    return ultravox.BODY_LIMIT if request_path == WEBHOOK_PATH else BODY_LIMIT


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 and our ``HttpError``s, as ``{"error": ...}``."""
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for this type only
    if isinstance(exc, HttpError):
        message = exc.message
    elif exc.status_code == 404:
        message = "not found"
    elif exc.status_code == 405:
        message = f"method {request.method} not allowed here"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message, exc.headers)


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client left before its body was complete: nobody reads this answer."""
    del request, exc
    return Response(status_code=400)


class ApiApp:
    """The ASGI callable the server runs."""

    def __init__(self, runtime: ApiRuntime, *, clock: Callable[[], float] = time.time) -> None:
        self.ctx = Context(runtime=runtime, clock=clock)
        self.metrics = metrics.Metrics(self.ctx)
        self.routes = routes(self.ctx, self.metrics)
        self.app = Starlette(
            routes=self.routes,
            middleware=[
                Middleware(Observe, stats=self.ctx.stats),
                Middleware(Paths),
                Middleware(BearerAuth, token=lambda: self.ctx.runtime.config.api.token,
                           open_paths=OPEN_PATHS),
                Middleware(BodyCap, limit_for=body_limit),
            ],
            exception_handlers={HTTPException: _http_error, ClientDisconnect: _client_gone},
        )

    def operations(self) -> set[tuple[str, str]]:
        """Every (method, path template) served (HEAD aside: it follows GET)."""
        return {(method, route.path) for route in self.routes if isinstance(route, Route)
                for method in route.methods or () if method != "HEAD"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
