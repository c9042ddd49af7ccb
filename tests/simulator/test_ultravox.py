"""Fake Ultravox over real loopback HTTP: the call object, /recording, auth and rate limit."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.simulator.conftest import FakeClock, ultravox_auth
from worker.simulator import RecordingScript, Simulator, World, expected_sha256, run_simulator

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


@pytest.mark.anyio
async def test_lifecycle_from_pending_to_recording_download(
    sim: Simulator, world: World, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """joined/ended fill in as the clock moves; /recording is 404, then 302 to the right bytes."""
    call = world.add_call(
        "ultravox",
        starts_after=1,
        lasts=2,
        recordings=[RecordingScript(ready_after=3, size=70_000)],
    )
    url = f"{sim.base_urls['ultravox']}/api/calls/{call.call_id}"
    body = (await client.get(url, headers=ultravox_auth(sim))).json()
    assert set(body) == {
        "callId", "created", "joined", "ended", "endReason", "recordingEnabled",
        "maxDuration", "joinTimeout", "metadata", "shortSummary", "summary",
    }  # fmt: skip
    assert (body["callId"], body["joined"], body["ended"], body["endReason"]) == (
        call.call_id, None, None, None,
    )  # fmt: skip
    assert ISO.fullmatch(body["created"])
    assert body["joinTimeout"] == "30s"
    clock.advance(1)
    body = (await client.get(url, headers=ultravox_auth(sim))).json()
    assert ISO.fullmatch(body["joined"])
    assert body["ended"] is None
    clock.advance(2)
    body = (await client.get(url, headers=ultravox_auth(sim))).json()
    assert ISO.fullmatch(body["ended"])
    assert body["endReason"] == "hangup"
    recording = await client.get(url + "/recording", headers=ultravox_auth(sim))
    assert recording.status_code == 404
    clock.advance(3)
    recording = await client.get(url + "/recording", headers=ultravox_auth(sim))
    assert recording.status_code == 302
    query = parse_qs(urlsplit(recording.headers["location"]).query)
    assert re.fullmatch(r"\d{8}T\d{6}Z", query["X-Goog-Date"][0])
    assert query["X-Goog-Expires"] == ["300"]
    download = await client.get(recording.headers["location"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "audio/wav"
    assert int(download.headers["content-length"]) == 70_000
    assert hashlib.sha256(download.content).hexdigest() == expected_sha256(call.recordings[0])


@pytest.mark.anyio
async def test_missing_or_wrong_api_key_is_401(
    sim: Simulator, world: World, client: httpx.AsyncClient
) -> None:
    """No X-API-Key, or a wrong one, answers 401 with a JSON detail."""
    url = f"{sim.base_urls['ultravox']}/api/calls/{world.add_call('ultravox').call_id}"
    for headers in ({}, {"X-API-Key": "nope"}):
        reply = await client.get(url, headers=headers)
        assert reply.status_code == 401
        assert "detail" in reply.json()


@pytest.mark.anyio
async def test_unknown_call_is_404(sim: Simulator, client: httpx.AsyncClient) -> None:
    """An id the world does not know answers 404 on both endpoints."""
    url = f"{sim.base_urls['ultravox']}/api/calls/00000000-0000-4000-8000-000000000000"
    assert (await client.get(url, headers=ultravox_auth(sim))).status_code == 404
    assert (await client.get(url + "/recording", headers=ultravox_auth(sim))).status_code == 404


@pytest.mark.anyio
async def test_unjoined_call_ends_by_itself_without_recording(
    sim: Simulator, world: World, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """Nobody joins: ended after joinTimeout with endReason unjoined; /recording stays 404."""
    call = world.add_call("ultravox", starts_after=None, join_timeout=5)
    url = f"{sim.base_urls['ultravox']}/api/calls/{call.call_id}"
    clock.advance(5)
    body = (await client.get(url, headers=ultravox_auth(sim))).json()
    assert (body["joined"], body["endReason"], body["joinTimeout"]) == (None, "unjoined", "5s")
    clock.advance(3600)
    assert (await client.get(url + "/recording", headers=ultravox_auth(sim))).status_code == 404


@pytest.mark.anyio
async def test_direct_recording_answers_200_with_the_bytes(
    sim: Simulator, world: World, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """With direct_recording the endpoint serves audio/wav itself instead of redirecting."""
    call = world.add_call(
        "ultravox",
        lasts=0,
        direct_recording=True,
        recordings=[RecordingScript(ready_after=0, size=5000)],
    )
    reply = await client.get(
        f"{sim.base_urls['ultravox']}/api/calls/{call.call_id}/recording",
        headers=ultravox_auth(sim),
    )
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "audio/wav"
    assert hashlib.sha256(reply.content).hexdigest() == expected_sha256(call.recordings[0])


@pytest.mark.anyio
async def test_a_failed_recording_stays_404(
    sim: Simulator, world: World, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """Ultravox has no failure signal: a recording that fails is simply never there."""
    call = world.add_call(
        "ultravox", lasts=0, recordings=[RecordingScript(ready_after=0, fails=True)]
    )
    clock.advance(60)
    url = f"{sim.base_urls['ultravox']}/api/calls/{call.call_id}/recording"
    assert (await client.get(url, headers=ultravox_auth(sim))).status_code == 404


@pytest.mark.anyio
async def test_above_the_rate_limit_answers_429_with_retry_after(
    world: World, client: httpx.AsyncClient
) -> None:
    """Past the per-key rate: 429 + Retry-After in whole seconds; the link TTL is configurable."""
    call = world.add_call("ultravox", lasts=0, recordings=[RecordingScript(ready_after=0)])
    async with run_simulator(world, ultravox_rate_limit=3, link_ttl=7) as sim:
        url = f"{sim.base_urls['ultravox']}/api/calls/{call.call_id}/recording"
        replies = [await client.get(url, headers=ultravox_auth(sim)) for _ in range(5)]
    assert [r.status_code for r in replies[:3]] == [302, 302, 302]
    assert "X-Goog-Expires=7&" in replies[0].headers["location"]
    throttled = replies[3]
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) >= 1
    assert "throttled" in throttled.json()["detail"]
