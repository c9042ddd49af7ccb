"""Compressed replies are decoded under the body cap: a gzip bomb costs at most the cap."""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from worker.model import FailureKind, PollFailed
from worker.providers import _http, _inflate

URL = "https://api.example/api/calls/x"


def gzip_bomb(decoded: int) -> bytes:
    """``decoded`` zero bytes, gzipped (about a thousandth of that), without holding them."""
    zobj = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(1024 * 1024)
    parts = [zobj.compress(block) for _ in range(decoded // len(block))]
    return b"".join([*parts, zobj.flush()])


def deflate(data: bytes, wbits: int) -> bytes:
    zobj = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return zobj.compress(data) + zobj.flush()


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


async def _get_json(handler: Any) -> Any:
    """GET through a MockTransport; replies use ``stream=`` so httpx reads them as off the wire."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        return await _http.get_json(client, URL, headers={}, log=structlog.get_logger(),
                                    parse=lambda body: body)


@pytest.mark.anyio
async def test_gzip_bomb_is_refused_without_inflating_it() -> None:
    """A 256 MB gzip bomb is refused as too large, and decoding it allocates about the cap."""
    bomb = gzip_bomb(256 * 1024 * 1024)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Encoding": "gzip"},
                              stream=httpx.ByteStream(bomb))

    tracemalloc.start()
    try:
        with capture_logs() as logs:
            result = await _get_json(handler)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(result, PollFailed)
    assert result.kind is FailureKind.TRANSIENT
    assert "larger than" in result.message
    assert [log["event"] for log in logs] == ["provider.unparseable"]
    # The bomb itself is ~250 KB; everything decoded stays within a few times the cap.
    assert peak < 4 * _http.MAX_BODY


@pytest.mark.anyio
async def test_compressed_reply_is_read() -> None:
    """A gzipped JSON reply under the cap is decoded and parsed as usual."""
    sent: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("accept-encoding"))
        return httpx.Response(200, headers={"Content-Encoding": "gzip"},
                              stream=httpx.ByteStream(gzip.compress(b'{"ok": true}')))

    assert await _get_json(handler) == {"ok": True}
    assert sent == [_inflate.ACCEPT_ENCODING]


@pytest.mark.anyio
@pytest.mark.parametrize("coding", ["br", "zstd", "gzip, gzip", "compress"])
async def test_unasked_encoding_is_refused(coding: str) -> None:
    """A content coding we did not ask for is refused as transient, not trusted or crashed on."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Encoding": coding},
                              stream=httpx.ByteStream(b"{}"))

    with capture_logs():
        result = await _get_json(handler)
    assert isinstance(result, PollFailed)
    assert result.kind is FailureKind.TRANSIENT


@pytest.mark.anyio
async def test_corrupt_gzip_is_transient() -> None:
    """A body labelled gzip that is not gzip is a transient failure, not an exception."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Encoding": "gzip"},
                              stream=httpx.ByteStream(b"not gzip"))

    with capture_logs():
        result = await _get_json(handler)
    assert isinstance(result, PollFailed)


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "identity": lambda data: data,
    "gzip": gzip.compress,
    "deflate": lambda data: deflate(data, zlib.MAX_WBITS),  # zlib-wrapped, as the RFC says
    "raw-deflate": lambda data: deflate(data, -zlib.MAX_WBITS),  # what some servers send
    "gzip-members": lambda data: gzip.compress(data[:7]) + gzip.compress(data[7:]),
}


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=3000) | st.builds(bytes, st.integers(0, 5000)),
       scheme=st.sampled_from(sorted(ENCODERS)), cap=st.integers(1, 4000),
       chunk=st.integers(1, 700))
@pytest.mark.anyio
async def test_read_capped_is_exact(data: bytes, scheme: str, cap: int, chunk: int) -> None:
    """Whatever the coding and chunking: the whole body when it fits, else cap + 1 bytes."""
    encoded = ENCODERS[scheme](data)
    coding = {"raw-deflate": "deflate", "gzip-members": "gzip"}.get(scheme, scheme)
    body, too_large = await _inflate.read_capped(_chunks(encoded, chunk), coding, cap)
    if len(data) <= cap:
        assert (body, too_large) == (data, False)
    else:
        assert (body, too_large) == (data[:cap + 1], True)


@pytest.mark.anyio
async def test_thousands_of_empty_gzip_members_are_refused() -> None:
    """A body of 50,000 empty gzip members is refused, not recursed into or spun on."""
    body = gzip.compress(b"") * 50_000
    with pytest.raises(zlib.error):
        await _inflate.read_capped(_chunks(body, 65536), "gzip", _http.MAX_BODY)


@pytest.mark.anyio
@pytest.mark.parametrize("body", [
    b"[" + b"0," * 600_000 + b"0]",  # a million tiny values: json.loads would take ~300 ms
    b'{"ok":true,"data":{"recordings":[' + b'{"id":"x"},' * 150_000 + b"{}]}}",
])
async def test_replies_with_too_many_json_values_are_not_parsed(body: bytes) -> None:
    """A reply under the byte cap but with more than MAX_JSON_VALUES values is refused unparsed."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(body))

    with capture_logs() as logs:
        result = await _get_json(handler)
    assert isinstance(result, PollFailed)
    assert "JSON values" in result.message
    assert [log["event"] for log in logs] == ["provider.unparseable"]


@given(value=st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=5), max_leaves=60))
def test_json_values_is_an_upper_bound(value: Any) -> None:
    """The cheap count is never below the number of values json.loads builds (bar the root)."""

    def count(node: Any) -> int:
        children = node.values() if isinstance(node, dict) else node if isinstance(
            node, list) else []
        return 1 + sum(count(child) for child in children)

    assert _http.json_values(json.dumps(value).encode()) >= count(value) - 1
