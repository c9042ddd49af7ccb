"""The edge shared by the three fake provider APIs: faults, authentication, routing, replies.

Handlers are plain synchronous functions from a request to a ``Reply``: a poll is a dict
lookup, a little arithmetic on the clock and one ``json.dumps``, with no logging, so the
simulator stays far cheaper than the daemon it is measuring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worker.simulator.asgi import (
    JSON_TYPE,
    Headers,
    Receive,
    Request,
    Router,
    Scope,
    Send,
    json_bytes,
    send_body,
)
from worker.simulator.faults import API_FAULTS, Faults, apply_early, mangle_json
from worker.simulator.files import send_recording
from worker.simulator.world import RecordingScript, World


@dataclass(slots=True)
class Reply:
    """What a handler answers: JSON (``body``), raw bytes, or a recording to stream."""

    status: int
    body: Any = None
    headers: Headers = field(default_factory=list)
    raw: bytes | None = None
    stream: RecordingScript | None = None
    content_type: str | None = None  # of the stream


Handler = Callable[[Request], Reply]
Authorize = Callable[[Request], Reply | None]


class ProviderApp:
    """One provider's ASGI app: fault first (it models the network edge), then auth, route."""

    def __init__(
        self,
        *,
        world: World,
        router: Router,
        authorize: Authorize,
        error: Callable[[int, str], Any],
        faults: Faults | None = None,
    ) -> None:
        self.world = world
        self.router = router
        self.authorize = authorize
        self.error = error  # (status, message) -> the provider's JSON error document
        self.faults = faults or Faults(API_FAULTS)

    def error_body(self, status: int, message: str) -> tuple[bytes, bytes]:
        return json_bytes(self.error(status, message)), JSON_TYPE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        rule = None
        if self.faults.rules:
            rule = self.faults.pick(request.path, self.world.clock())
            if rule is not None and await apply_early(rule, receive, send, self.error_body):
                return
        reply = self.authorize(request)
        if reply is None:
            found = self.router.match(request.method, request.path)
            if isinstance(found, int):
                text = "Not found." if found == 404 else "Method not allowed."
                reply = Reply(found, self.error(found, text))
            else:
                handler, request.params = found
                request.fault = rule
                reply = handler(request)
        if reply.stream is not None:
            await send_recording(send, request, reply.stream, content_type=reply.content_type)
        elif reply.raw is not None:
            await send_body(send, reply.status, reply.raw, None, reply.headers)
        else:
            body = mangle_json(rule, json_bytes(reply.body))
            await send_body(send, reply.status, body, JSON_TYPE, reply.headers)
