"""Every adapter turns every HTTP failure into the same values, and never leaks a key."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from tests.providers.support import (
    API_KEY,
    CALL_IDS,
    CALL_PATHS,
    WIDGET_KEY,
    Answer,
    EndlessBody,
    Routes,
    load,
    provider,
)
from worker.model import FailureKind, NotFound, PollFailed, Snapshot
from worker.providers import _http

pytestmark = pytest.mark.anyio

PROVIDERS = ["ultravox", "envoy", "apifycloud"]
LIVE_FIXTURES = {"ultravox": "ultravox_call_live", "envoy": "envoy_call_scheduled",
                 "apifycloud": "apifycloud_call_active"}


async def fetch(name: str, answer: Answer | list[Answer]) -> Any:
    routes = Routes({CALL_PATHS[name]: answer})
    async with provider(name, routes) as adapter:
        return await adapter.fetch_call(CALL_IDS[name])


def good(name: str) -> httpx.Response:
    return httpx.Response(200, json=load(LIVE_FIXTURES[name]))


@pytest.fixture(params=PROVIDERS)
def name(request: pytest.FixtureRequest) -> str:
    """Each of the three adapters."""
    value: str = request.param
    return value


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failures_are_config_errors(name: str, status: int) -> None:
    """401 and 403 mean the key was rejected: a CONFIG failure and an auth_failed log line."""
    with capture_logs() as logs:
        result = await fetch(name, httpx.Response(status))
    assert isinstance(result, PollFailed)
    assert result.kind is FailureKind.CONFIG
    assert "key rejected" in result.message
    assert [log["event"] for log in logs] == ["provider.auth_failed"]
    assert (logs[0]["provider"], logs[0]["call_id"]) == (name, CALL_IDS[name])


async def test_404_is_not_found(name: str) -> None:
    """404 for the call is NotFound, not a failure."""
    assert await fetch(name, httpx.Response(404, json={"detail": "Not found."})) == NotFound()


async def test_429_with_retry_after_seconds(name: str) -> None:
    """429 is rate limited and carries Retry-After in seconds."""
    with capture_logs() as logs:
        result = await fetch(name, httpx.Response(429, headers={"Retry-After": "17"}))
    assert isinstance(result, PollFailed)
    assert (result.kind, result.retry_after) == (FailureKind.RATE_LIMITED, 17.0)
    assert [log["event"] for log in logs] == ["provider.rate_limited"]


async def test_429_with_retry_after_http_date(name: str) -> None:
    """429 with an HTTP-date Retry-After waits until that date."""
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    result = await fetch(name, httpx.Response(429, headers={"Retry-After": when}))
    assert isinstance(result, PollFailed)
    assert result.kind is FailureKind.RATE_LIMITED
    assert result.retry_after == pytest.approx(120, abs=5)


async def test_503_is_rate_limited_and_clamped(name: str) -> None:
    """503 is rate limited too; an absurd Retry-After is clamped; none at all is None."""
    huge = await fetch(name, httpx.Response(503, headers={"Retry-After": "999999"}))
    bare = await fetch(name, httpx.Response(503))
    assert huge == PollFailed(kind=FailureKind.RATE_LIMITED, message=huge.message,
                              retry_after=_http.MAX_RETRY_AFTER)
    assert isinstance(bare, PollFailed)
    assert (bare.kind, bare.retry_after) == (FailureKind.RATE_LIMITED, None)


async def test_500_then_success_is_retried_in_process(name: str) -> None:
    """A 500 followed by a good reply is retried by stamina and yields the snapshot."""
    routes = Routes({CALL_PATHS[name]: [httpx.Response(500), good(name)]})
    async with provider(name, routes) as adapter:
        result = await adapter.fetch_call(CALL_IDS[name])
    assert isinstance(result, Snapshot)
    assert len(routes.requests) == 2


async def test_persistent_5xx_is_transient(name: str) -> None:
    """A 502 that does not go away gives up after a few attempts, as transient."""
    routes = Routes({CALL_PATHS[name]: httpx.Response(502)})
    async with provider(name, routes) as adapter:
        result = await adapter.fetch_call(CALL_IDS[name])
    assert isinstance(result, PollFailed)
    assert result.kind is FailureKind.TRANSIENT
    assert len(routes.requests) == 3


async def test_connection_error_is_transient(name: str) -> None:
    """A refused connection is retried, then reported as transient."""
    result = await fetch(name, httpx.ConnectError("Connection refused"))
    assert isinstance(result, PollFailed)
    assert result.kind is FailureKind.TRANSIENT


async def test_connection_error_then_success(name: str) -> None:
    """A reset connection followed by a good reply is retried and yields the snapshot."""
    result = await fetch(name, [httpx.ConnectError("reset"), good(name)])
    assert isinstance(result, Snapshot)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"<html><body>502 Bad Gateway</body></html>", "text/html"),
     (b'{"callId": "3f2b8a1e", "ended": ', "application/json"),
     (b'[{"callId": "x"}]', "application/json"),
     (b"", "application/json"),
     (b"\xff\xfe\x00garbage", "application/octet-stream"),
     (b'"just a string"', "application/json")],
)
async def test_garbage_bodies_are_unparseable(name: str, body: bytes, content_type: str) -> None:
    """HTML, truncated JSON, arrays, empty and binary bodies: transient, logged with a snippet."""
    with capture_logs() as logs:
        result = await fetch(name, httpx.Response(200, content=body,
                                                  headers={"Content-Type": content_type}))
    assert isinstance(result, PollFailed)
    assert result.kind is FailureKind.TRANSIENT
    (log,) = logs
    assert log["event"] == "provider.unparseable"
    assert log["body"] == body[:200].decode("utf-8", "replace")
    assert (log["provider"], log["call_id"]) == (name, CALL_IDS[name])


async def test_huge_streamed_reply_is_cut_off(name: str) -> None:
    """A 50 MB streamed reply is abandoned after the cap, without reading it all."""
    body = EndlessBody(limit=50 * 1024 * 1024)
    result = await fetch(name, lambda request: httpx.Response(200, stream=body))
    assert isinstance(result, PollFailed)
    assert result.kind is FailureKind.TRANSIENT
    assert body.sent < 3 * 1024 * 1024


async def test_keys_never_reach_logs_or_messages(name: str) -> None:
    """Across every failure path, the adapter's key appears in no log line and no message."""
    secret = WIDGET_KEY if name == "apifycloud" else API_KEY
    echo = f'{{"error": "invalid key {secret}"}}'.encode()
    answers: list[Answer] = [
        httpx.Response(401, content=echo), httpx.Response(403, content=echo),
        httpx.Response(429, content=echo), httpx.Response(200, content=echo[:-3]),
        httpx.Response(200, content=b"<html>" + echo), httpx.Response(500, content=echo),
        httpx.ConnectError(f"Illegal header value {secret}"), httpx.Response(418, content=echo),
    ]
    results: list[Any] = []
    with capture_logs() as logs:
        for answer in answers:
            results.append(await fetch(name, answer))
    assert logs
    assert secret not in repr(logs) + repr(results)
