"""Fault injection: each fault type observed over HTTP, and the draws are seeded."""

from __future__ import annotations

import json
import logging
import time
import zlib

import httpx
import pytest

from tests.simulator.conftest import START, FakeClock, envoy_auth, ultravox_auth
from worker.simulator import Fault, Faults, RecordingScript, Simulator, World


def _ultravox_url(sim: Simulator, world: World) -> str:
    return f"{sim.base_urls['ultravox']}/api/calls/{world.add_call('ultravox', lasts=None).call_id}"


@pytest.mark.anyio
async def test_rate_limit_fault_answers_429_with_retry_after(
    sim: Simulator, world: World, client: httpx.AsyncClient
) -> None:
    """RATE_LIMIT with count=2 answers 429 + Retry-After twice, then normally again."""
    url = _ultravox_url(sim, world)
    sim.faults["ultravox"].add(Fault.RATE_LIMIT, count=2, retry_after=3)
    replies = [await client.get(url, headers=ultravox_auth(sim)) for _ in range(3)]
    assert [r.status_code for r in replies] == [429, 429, 200]
    assert replies[0].headers["retry-after"] == "3"
    assert sim.faults["ultravox"].hits[Fault.RATE_LIMIT] == 2


@pytest.mark.anyio
async def test_server_error_burst_cycles_500_502_503(
    sim: Simulator, world: World, client: httpx.AsyncClient
) -> None:
    """A 5xx burst of 3 answers 500, 502, 503 (with Retry-After), then the call again."""
    call = world.add_call("envoy")
    url = f"{sim.base_urls['envoy']}/api/v1/calls/{call.call_id}"
    sim.faults["envoy"].add(Fault.SERVER_ERROR, count=3)
    replies = [await client.get(url, headers=envoy_auth(sim)) for _ in range(4)]
    assert [r.status_code for r in replies] == [500, 502, 503, 200]
    assert "retry-after" in replies[2].headers
    assert "retry-after" not in replies[0].headers


@pytest.mark.anyio
async def test_slow_fault_delays_the_reply(
    sim: Simulator, world: World, client: httpx.AsyncClient
) -> None:
    """SLOW waits `delay` seconds and then answers normally."""
    url = _ultravox_url(sim, world)
    sim.faults["ultravox"].add(Fault.SLOW, delay=0.3, count=1)
    began = time.perf_counter()
    reply = await client.get(url, headers=ultravox_auth(sim))
    assert reply.status_code == 200
    assert time.perf_counter() - began >= 0.3


@pytest.mark.anyio
async def test_malformed_replies_truncated_html_and_array(
    sim: Simulator, world: World, client: httpx.AsyncClient
) -> None:
    """Truncated JSON does not parse, the HTML page is text/html, the array is the wrong shape."""
    call = world.add_call("apifycloud")
    url = f"{sim.base_urls['apifycloud']}/api/calls/{call.call_id}"
    faults = sim.faults["apifycloud"]
    faults.add(Fault.TRUNCATED_JSON, count=1)
    faults.add(Fault.HTML_ERROR, count=1)
    faults.add(Fault.JSON_ARRAY, count=1)
    truncated, html, array = [await client.get(url) for _ in range(3)]
    assert truncated.status_code == 200
    assert truncated.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        truncated.json()
    assert html.status_code == 200
    assert html.headers["content-type"].startswith("text/html")
    assert html.text.startswith("<!DOCTYPE html>")
    assert isinstance(array.json(), list)
    assert array.json()[0]["ok"] is True


@pytest.mark.anyio
async def test_hostile_replies(sim: Simulator, world: World, client: httpx.AsyncClient) -> None:
    """A gzip bomb is small on the wire and huge inflated; a flood lists `listed` recordings."""
    call = world.add_call("apifycloud")
    url = f"{sim.base_urls['apifycloud']}/api/calls/{call.call_id}"
    faults = sim.faults["apifycloud"]
    faults.add(Fault.GZIP_BOMB, count=1, inflated=8 * 1024 * 1024)
    faults.add(Fault.MANY_RECORDINGS, count=1, listed=15_000)
    async with client.stream("GET", url) as bomb:
        raw = b"".join([chunk async for chunk in bomb.aiter_raw()])
    assert bomb.headers["content-encoding"] == "gzip"
    assert len(raw) < 64 * 1024
    assert len(zlib.decompress(raw, zlib.MAX_WBITS | 16)) == 8 * 1024 * 1024
    flood = (await client.get(url)).json()
    assert flood["ok"] is True
    assert len(flood["data"]["recordings"]) == 15_000


@pytest.mark.anyio
async def test_window_and_path_filter(
    sim: Simulator, world: World, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """A rule hits only inside its clock window and only paths containing `match`."""
    url = _ultravox_url(sim, world)
    sim.faults["ultravox"].add(
        Fault.SERVER_ERROR, status=503, start=START + 10, end=START + 20, match="/recording"
    )

    async def status(path: str) -> int:
        return (await client.get(url + path, headers=ultravox_auth(sim))).status_code

    assert await status("/recording") == 404  # before the window
    clock.advance(10)
    assert await status("/recording") == 503
    assert await status("") == 200  # not matched
    clock.advance(10)
    assert await status("/recording") == 404  # after the window


def test_probability_draws_are_deterministic_given_a_seed() -> None:
    """Two Faults with the same seed pick the same requests; a foreign kind is refused."""
    picks = []
    for _ in range(2):
        faults = Faults(seed=42)
        faults.add(Fault.SERVER_ERROR, probability=0.3)
        picks.append([faults.pick("/x", 0.0) is not None for _ in range(200)])
    assert picks[0] == picks[1]
    assert 30 < sum(picks[0]) < 90
    with pytest.raises(ValueError, match="does not apply"):
        Faults().add(Fault.TRUNCATE_BODY)


async def _download_link(
    sim: Simulator, world: World, client: httpx.AsyncClient, size: int = 200_000
) -> tuple[str, str]:
    call = world.add_call(
        "apifycloud", lasts=0, recordings=[RecordingScript(ready_after=0, size=size)]
    )
    url = f"{sim.base_urls['apifycloud']}/api/calls/{call.call_id}"
    return url, (await client.get(url)).json()["data"]["recordings"][0]["url"]


@pytest.mark.anyio
async def test_truncated_download_cuts_the_connection_quietly(
    sim: Simulator, world: World, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """TRUNCATE_BODY promises the full length, sends `after` bytes, hangs up, logs nothing."""
    _, link = await _download_link(sim, world, client)
    sim.faults["files"].add(Fault.TRUNCATE_BODY, after=1000, count=1)
    with caplog.at_level(logging.WARNING), pytest.raises(httpx.RemoteProtocolError):
        await client.get(link)
    assert (await client.get(link)).status_code == 200
    assert not [r for r in caplog.records if r.name.startswith("uvicorn")]


@pytest.mark.anyio
async def test_xml_error_with_200_and_wrong_content_type(
    sim: Simulator, world: World, client: httpx.AsyncClient
) -> None:
    """XML_ERROR_200 is a 200 carrying an XML error; WRONG_CONTENT_TYPE labels the bytes falsely."""
    _, link = await _download_link(sim, world, client)
    sim.faults["files"].add(Fault.XML_ERROR_200, count=1)
    sim.faults["files"].add(Fault.WRONG_CONTENT_TYPE, count=1, content_type="text/plain")
    xml = await client.get(link)
    assert (xml.status_code, xml.headers["content-type"]) == (200, "application/xml")
    assert xml.text.startswith("<?xml")
    mislabelled = await client.get(link)
    assert mislabelled.headers["content-type"] == "text/plain"
    assert len(mislabelled.content) == 200_000


@pytest.mark.anyio
async def test_link_expires_mid_download_until_a_fresh_one_is_fetched(
    sim: Simulator, world: World, client: httpx.AsyncClient
) -> None:
    """EXPIRE_MID_DOWNLOAD stalls then cuts; the link is 403 after, a freshly fetched one works."""
    call_url, link = await _download_link(sim, world, client)
    sim.faults["files"].add(Fault.EXPIRE_MID_DOWNLOAD, after=5000, stall=0.2, count=1)
    began = time.perf_counter()
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get(link)
    assert time.perf_counter() - began >= 0.2
    assert (await client.get(link)).status_code == 403
    fresh = (await client.get(call_url)).json()["data"]["recordings"][0]["url"]
    assert (await client.get(fresh)).status_code == 200
