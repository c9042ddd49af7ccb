"""The API's HTTP plumbing on Starlette: JSON errors, path parameters, one route per path.

Handlers raise ``HttpError`` and return Starlette responses; ``app.py`` turns errors into
``{"error": ...}`` answers. A path is one ``Route`` whose handlers are keyed by method, so a
wrong method answers 405 with an ``Allow`` header naming every method of that path, and a new
one (``GET /v1/calls``, ``DELETE /v1/calls/...``) is one more entry in ``app.routes``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

JSON_TYPE = "application/json"
ROUTE_KEY = "callwatch.route"  # the matched path template, for logs and metrics

Handler = Callable[[Request], Awaitable[Response]]


class HttpError(HTTPException):
    """Stop handling and answer ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status, message, dict(headers) if headers else None)
        self.message = message


def json_bytes(obj: Any) -> bytes:
    """Compact JSON, ASCII-only: safe for any string we hold, even an odd one."""
    return json.dumps(obj, separators=(",", ":")).encode()


def json_response(status: int, obj: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json_bytes(obj), status, dict(headers) if headers else None, JSON_TYPE)


def error_response(status: int, message: str,
                   headers: Mapping[str, str] | None = None) -> Response:
    return json_response(status, {"error": message}, headers)


def param(request: Request, name: str) -> str:
    """Path parameter ``name``, percent-decoded (the router saw it still encoded, so an
    encoded slash stays inside the parameter); 400 if it is not UTF-8."""
    raw = str(request.path_params[name])
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "the request path is not valid UTF-8") from None


def path(template: str, **handlers: Handler) -> Route:
    """One route for ``template`` serving each ``METHOD=handler`` given."""
    by_method = {method.upper(): handler for method, handler in handlers.items()}

    async def endpoint(request: Request) -> Response:
        request.scope[ROUTE_KEY] = template
        method = "GET" if request.method == "HEAD" else request.method
        return await by_method[method](request)

    endpoint.__name__ = template  # Starlette names routes after their endpoint
    return Route(template, endpoint, methods=list(by_method))
