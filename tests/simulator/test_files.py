"""The signed-URL file store: signatures checked byte for byte, expiry, ranges, XML errors."""

from __future__ import annotations

import httpx
import pytest

from tests.simulator.conftest import FakeClock, ultravox_auth
from worker.simulator import RecordingScript, Simulator, World, content_bytes

SIZE = 3 * 2**20 + 17


async def _link(
    sim: Simulator, world: World, client: httpx.AsyncClient
) -> tuple[str, RecordingScript]:
    """A fresh Ultravox recording link and the recording behind it."""
    call = world.add_call(
        "ultravox", lasts=0, recordings=[RecordingScript(ready_after=0, size=SIZE, seed=5)]
    )
    reply = await client.get(
        f"{sim.base_urls['ultravox']}/api/calls/{call.call_id}/recording",
        headers=ultravox_auth(sim),
    )
    assert reply.status_code == 302
    return reply.headers["location"], call.recordings[0]


def _assert_access_denied(reply: httpx.Response) -> None:
    assert reply.status_code == 403
    assert reply.headers["content-type"] == "application/xml"
    assert reply.text.startswith("<?xml")
    assert "<Code>AccessDenied</Code>" in reply.text


@pytest.mark.anyio
async def test_an_expired_link_answers_403_with_an_xml_error(
    sim: Simulator, world: World, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """Past X-Goog-Date + X-Goog-Expires the link answers 403 AccessDenied in XML."""
    url, _ = await _link(sim, world, client)
    clock.advance(299)
    assert (await client.head(url)).status_code == 200
    clock.advance(1)
    reply = await client.get(url)
    _assert_access_denied(reply)
    assert "expired" in reply.text


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("%40", "@"),
        ("%2F", "%2f"),
        ("X-Goog-Expires=300", "X-Goog-Expires=3000"),
        ("/ultravox-", "/Ultravox-"),
    ],
)
async def test_a_link_changed_in_any_byte_answers_403(
    sim: Simulator, world: World, client: httpx.AsyncClient, old: str, new: str
) -> None:
    """Re-encoding the query (or touching the path or a parameter) breaks the signature."""
    url, _ = await _link(sim, world, client)
    assert old in url
    _assert_access_denied(await client.get(url.replace(old, new, 1)))


@pytest.mark.anyio
async def test_a_range_request_answers_206_with_the_tail(
    sim: Simulator, world: World, client: httpx.AsyncClient
) -> None:
    """Range: bytes=N- answers 206 with Content-Range and exactly the bytes from N on."""
    url, rec = await _link(sim, world, client)
    start = 2**20 + 3
    reply = await client.get(url, headers={"Range": f"bytes={start}-"})
    assert reply.status_code == 206
    assert reply.headers["content-range"] == f"bytes {start}-{SIZE - 1}/{SIZE}"
    assert int(reply.headers["content-length"]) == SIZE - start
    assert reply.content == content_bytes(rec, start)
    suffix = await client.get(url, headers={"Range": "bytes=-10"})
    assert suffix.content == content_bytes(rec, SIZE - 10)


@pytest.mark.anyio
async def test_a_range_past_the_end_is_416(
    sim: Simulator, world: World, client: httpx.AsyncClient
) -> None:
    """A range starting at or past the size answers 416 with Content-Range: bytes */size."""
    url, _ = await _link(sim, world, client)
    reply = await client.get(url, headers={"Range": f"bytes={SIZE}-"})
    assert reply.status_code == 416
    assert reply.headers["content-range"] == f"bytes */{SIZE}"


@pytest.mark.anyio
async def test_head_and_full_get_carry_length_type_and_etag(
    sim: Simulator, world: World, client: httpx.AsyncClient
) -> None:
    """HEAD and GET agree on Content-Length, Content-Type and ETag; GET has every byte."""
    url, rec = await _link(sim, world, client)
    head = await client.head(url)
    full = await client.get(url)
    for reply in (head, full):
        assert reply.headers["content-length"] == str(SIZE)
        assert reply.headers["content-type"] == "audio/wav"
        assert reply.headers["accept-ranges"] == "bytes"
    assert head.headers["etag"] == full.headers["etag"]
    assert full.content == content_bytes(rec)


@pytest.mark.anyio
async def test_a_link_to_a_recording_that_is_gone_is_404(
    sim: Simulator, world: World, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """A valid signature for a call that has since vanished answers 404 NoSuchKey."""
    call = world.add_call(
        "envoy", lasts=0, vanishes_after=10, recordings=[RecordingScript(ready_after=0)]
    )
    url = sim.signer.sign("envoy", call.call_id, call.recordings[0], clock()).url
    assert (await client.get(url)).status_code == 200
    clock.advance(10)
    reply = await client.get(url)
    assert reply.status_code == 404
    assert "<Code>NoSuchKey</Code>" in reply.text
