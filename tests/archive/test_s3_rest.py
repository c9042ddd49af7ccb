"""S3Rest's own logic: retry of transient replies, one-word errors, SigV4 shape."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
import stamina

from worker.archive.s3_rest import Credentials, S3Rest, sign
from worker.archive.target import Fault, TargetError
from worker.secrets import Secret

pytestmark = pytest.mark.anyio
CREDS = Credentials(access_key_id=Secret("AKIDEXAMPLE"),
                    secret_access_key=Secret("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"))
SLOWDOWN = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"


@pytest.fixture(autouse=True)
def no_sleep() -> Iterator[None]:
    """stamina retries without sleeping in these tests."""
    with stamina.set_testing(True, attempts=4):
        yield


def rest(handler: httpx.MockTransport) -> S3Rest:
    return S3Rest(httpx.AsyncClient(transport=handler), bucket="b", region="us-east-1",
                  endpoint_url="http://s3.test", credentials=CREDS)


async def test_slowdown_and_5xx_are_retried_then_succeed() -> None:
    """503 SlowDown and 500 are retried; the third reply (200) is the result."""
    replies = iter([httpx.Response(503, content=SLOWDOWN), httpx.Response(500),
                    httpx.Response(200)])
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return next(replies)

    await rest(httpx.MockTransport(handle)).put("k", b"x")
    assert len(seen) == 3


async def test_access_denied_is_not_retried_and_pauses() -> None:
    """403 AccessDenied: one request, a PAUSE error naming the code, never the key."""
    calls = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(403, content=b"<Error><Code>AccessDenied</Code></Error>")

    with pytest.raises(TargetError) as caught:
        await rest(httpx.MockTransport(handle)).put("k", b"x")
    assert calls == 1
    assert caught.value.kind is Fault.PAUSE and "AccessDenied" in caught.value.reason
    assert "wJalr" not in caught.value.reason and "AKID" not in caught.value.reason


def test_signature_headers_name_the_scope_and_never_the_secret() -> None:
    """Authorization carries key id, scope and signed headers; the secret itself never."""
    headers = sign("GET", "https://b.s3.us-east-1.amazonaws.com/a%20b?uploads=", {},
                   "UNSIGNED-PAYLOAD", CREDS, "us-east-1", datetime(2026, 12, 6, tzinfo=UTC))
    auth = headers["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261206/us-east-1/s3/"
                           "aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
                           "Signature=")
    assert "wJalr" not in str(headers)
    assert headers["x-amz-date"] == "20261206T000000Z"
