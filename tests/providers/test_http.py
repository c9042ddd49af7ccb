"""The shared HTTP plumbing: classification, Retry-After, body caps, ids and URLs."""

from __future__ import annotations

import email.utils
from typing import Any

import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from tests.providers.support import EndlessBody
from worker.model import FailureKind, NotFound, PollFailed
from worker.providers import _http

URL = "https://api.example/api/calls/x"
HEADERS = {"X-API-Key": "secret-key-value"}


async def _get_json(handler: Any) -> Any:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        return await _http.get_json(client, URL, headers=HEADERS, log=structlog.get_logger(),
                                    parse=lambda body: body)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("7", 7.0), (" 2.5 ", 2.5), ("0", 0.0), ("86400", _http.MAX_RETRY_AFTER),
     (None, None), ("soon", None), ("-3", None), ("nan", None), ("inf", None)],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    """Retry-After in seconds is read, clamped to the cap, and garbage is ignored."""
    assert _http.retry_after_seconds(value) == expected


def test_retry_after_http_date() -> None:
    """Retry-After as an HTTP-date becomes the seconds until then, never negative."""
    now = 1_795_000_000.0
    assert _http.retry_after_seconds(email.utils.formatdate(now + 42, usegmt=True), now) == 42.0
    assert _http.retry_after_seconds(email.utils.formatdate(now - 42, usegmt=True), now) == 0.0
    assert _http.retry_after_seconds(email.utils.formatdate(now + 9999, usegmt=True), now) == (
        _http.MAX_RETRY_AFTER)


@pytest.mark.anyio
async def test_endless_reply_is_cut_off() -> None:
    """An endless 200 body is read only up to the cap, then refused as transient."""
    body = EndlessBody()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body)

    with capture_logs() as logs:
        result = await _get_json(handler)
    assert isinstance(result, PollFailed)
    assert result.kind is FailureKind.TRANSIENT
    assert body.sent <= _http.MAX_BODY + 2 * len(body.chunk)
    assert [log["event"] for log in logs] == ["provider.unparseable"]
    assert len(logs[0]["body"]) <= _http.SNIPPET_BYTES


@pytest.mark.anyio
async def test_declared_huge_reply_is_not_read_at_all() -> None:
    """A Content-Length of 50 MB is refused before a single byte is read."""
    body = EndlessBody(limit=50 * 1024 * 1024)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body, headers={"Content-Length": str(50 * 1024**2)})

    result = await _get_json(handler)
    assert isinstance(result, PollFailed)
    assert body.sent == 0


@pytest.mark.anyio
async def test_trickling_reply_hits_the_attempt_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reply that trickles in forever is abandoned at the deadline, as a transient failure."""
    monkeypatch.setattr(_http, "ATTEMPT_DEADLINE", 0.05)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=EndlessBody(chunk=b"{", delay=0.01))

    result = await _get_json(handler)
    assert isinstance(result, PollFailed)
    assert result.kind is FailureKind.TRANSIENT


@pytest.mark.anyio
async def test_read_timeout_is_transient() -> None:
    """A client timeout is retried, then reported as transient."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    result = await _get_json(handler)
    assert result == PollFailed(kind=FailureKind.TRANSIENT,
                                message="ReadTimeout from /api/calls/x")


@pytest.mark.anyio
@pytest.mark.parametrize("status", [400, 405, 422])
async def test_other_client_errors_are_config_failures(status: int) -> None:
    """A 4xx that is not auth, 404 or rate limiting means our request is wrong: CONFIG."""
    result = await _get_json(lambda request: httpx.Response(status))
    assert isinstance(result, PollFailed)
    assert result.kind is FailureKind.CONFIG


@pytest.mark.anyio
async def test_gone_is_not_found() -> None:
    """410 Gone reads like 404."""
    assert await _get_json(lambda request: httpx.Response(410)) == NotFound()


@pytest.mark.anyio
async def test_redirect_is_not_followed_for_json() -> None:
    """A JSON endpoint that redirects is a transient oddity; the key never follows it."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"Location": "https://elsewhere.example/"})

    result = await _get_json(handler)
    assert isinstance(result, PollFailed)
    assert seen == [URL]


@pytest.mark.anyio
async def test_absurdly_nested_json_is_unparseable() -> None:
    """JSON nested deeper than the parser can go is unparseable, not a crash."""
    result = await _get_json(lambda request: httpx.Response(200, content=b"[" * 100_000))
    assert isinstance(result, PollFailed)
    assert result.kind is FailureKind.TRANSIENT


def test_snippet_redacts_what_we_sent() -> None:
    """A body that echoes our credentials is logged with them blanked out."""
    text = _http.snippet(b'{"error": "bad key secret-key-value or Bearer tok-12345"}',
                         {"X-API-Key": "secret-key-value", "Authorization": "Bearer tok-12345"})
    assert "secret-key-value" not in text
    assert "tok-12345" not in text


@pytest.mark.parametrize(
    "call_id",
    ["", "a" * 201, "a b", "a\tb", "a\nb", "a\x00b", "../etc", "a/b", "a?b", "a%2Fb", "ä", "..",
     ".", "a#b"],
)
def test_unsafe_call_ids_are_rejected(call_id: str) -> None:
    """Empty, overlong, whitespace, control, slash, dot-only and non-token ids get a reason."""
    reason = _http.check_token(call_id)
    assert reason is not None
    assert call_id not in reason or not call_id


@pytest.mark.parametrize("call_id", ["call_7c1e", "a.b:c-d_e", "A" * 200])
def test_safe_tokens_are_accepted(call_id: str) -> None:
    """Letters, digits and . _ : - up to 200 characters pass the token check."""
    assert _http.check_token(call_id) is None


@pytest.mark.parametrize(
    ("call_id", "ok"),
    [("3f2b8a1e-5c4d-4e6f-8a9b-0c1d2e3f4a5b", True), ("3F2B8A1E-5C4D-4E6F-8A9B-0C1D2E3F4A5B", True),
     ("3f2b8a1e5c4d4e6f8a9b0c1d2e3f4a5b", False), ("call_3f2b8a1e", False),
     ("{3f2b8a1e-5c4d-4e6f-8a9b-0c1d2e3f4a5b}", False)],
)
def test_uuid_ids(call_id: str, ok: bool) -> None:
    """Only hyphenated UUIDs pass the UUID check."""
    assert (_http.check_uuid(call_id) is None) is ok


def test_absolute_location_is_kept_byte_for_byte() -> None:
    """A signed Location is used exactly as sent, odd encodings included."""
    location = "https://storage.googleapis.com/b/a%2Fb.wav?X-Goog-Signature=ab%2bcd&x=%7E&"
    assert _http.resolve_location(URL, location) == location


def test_relative_location_is_resolved() -> None:
    """A relative Location is joined to the URL that answered."""
    assert _http.resolve_location(URL, "/files/r.wav?sig=a%2Fb") == (
        "https://api.example/files/r.wav?sig=a%2Fb")


@pytest.mark.parametrize(
    ("url", "same"),
    [("https://api.example/x", True), ("https://API.example:443/x", True),
     ("http://api.example/x", False), ("https://api.example:8443/x", False),
     ("https://storage.googleapis.com/x", False), ("https://[::1/x", False)],
)
def test_same_origin(url: str, same: bool) -> None:
    """Only the API's own scheme, host and port count as the API."""
    assert _http.same_origin(url, "https://api.example") is same


def test_snippet_redacts_a_key_straddling_the_cut() -> None:
    """A key that starts just before the snippet's end is not left half visible."""
    body = b"x" * (_http.SNIPPET_BYTES - 5) + b"secret-key-value" + b"y" * 50
    text = _http.snippet(body, HEADERS)
    assert "secre" not in text
    assert len(text) == _http.SNIPPET_BYTES


def test_snippet_keeps_ordinary_header_values() -> None:
    """Values we send that are not credentials (Accept) are not blanked out of a snippet."""
    text = _http.snippet(b'{"type": "application/json"}', {"Accept": "application/json"})
    assert text == '{"type": "application/json"}'
