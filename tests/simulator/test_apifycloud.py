"""Fake apifycloud over real loopback HTTP: the ok/data envelope, participants, recordings."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.simulator.conftest import FakeClock
from worker.simulator import RecordingScript, Simulator, World, expected_sha256


@pytest.mark.anyio
async def test_lifecycle_from_created_to_available_recordings(
    sim: Simulator, world: World, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """created -> active -> ended; recordings processing (url null) -> available or failed."""
    good, bad = (
        RecordingScript(ready_after=2, size=4321),
        RecordingScript(ready_after=1, fails=True),
    )
    call = world.add_call("apifycloud", starts_after=1, lasts=3, recordings=[good, bad])
    url = f"{sim.base_urls['apifycloud']}/api/calls/{call.call_id}"
    body = (await client.get(url)).json()
    assert body["ok"] is True
    assert (body["data"]["status"], body["data"]["participants"], body["data"]["recordings"]) == (
        "created", [], [],
    )  # fmt: skip
    clock.advance(1)
    data = (await client.get(url)).json()["data"]
    assert data["status"] == "active"
    assert all(p["joinedAt"] and p["leftAt"] is None for p in data["participants"])
    assert [(r["status"], r["url"]) for r in data["recordings"]] == [("processing", None)] * 2
    clock.advance(5)
    data = (await client.get(url)).json()["data"]
    assert data["status"] == "ended"
    assert all(p["leftAt"] for p in data["participants"])
    available, failed = data["recordings"]
    assert set(available) == {"id", "providerArchiveId", "url", "status", "createdAt", "updatedAt"}
    assert (available["id"], available["status"]) == (good.id, "available")
    assert (failed["status"], failed["url"]) == ("failed", None)
    query = parse_qs(urlsplit(available["url"]).query)
    assert set(query) >= {"X-Amz-Date", "X-Amz-Expires", "X-Amz-Signature"}
    download = await client.get(available["url"])
    assert hashlib.sha256(download.content).hexdigest() == expected_sha256(good)
    assert download.headers["content-type"] == "video/mp4"


@pytest.mark.anyio
async def test_every_get_hands_out_a_fresh_url(
    sim: Simulator, world: World, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """A later GET of the call signs the recording URL anew (a later X-Amz-Date)."""
    call = world.add_call("apifycloud", lasts=0, recordings=[RecordingScript(ready_after=0)])
    url = f"{sim.base_urls['apifycloud']}/api/calls/{call.call_id}"
    first = (await client.get(url)).json()["data"]["recordings"][0]["url"]
    clock.advance(1)
    second = (await client.get(url)).json()["data"]["recordings"][0]["url"]
    assert first != second
    assert (
        parse_qs(urlsplit(first).query)["X-Amz-Date"]
        < parse_qs(urlsplit(second).query)["X-Amz-Date"]
    )


@pytest.mark.anyio
async def test_unknown_or_vanished_call_is_404_with_ok_false(
    sim: Simulator, world: World, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """Unknown ids, and calls past vanishes_after, answer 404 {"ok": false, "error": ...}."""
    call = world.add_call("apifycloud", vanishes_after=10)
    base = f"{sim.base_urls['apifycloud']}/api/calls/"
    assert (await client.get(base + call.call_id)).status_code == 200
    clock.advance(10)
    for call_id in (call.call_id, "00000000-0000-4000-8000-000000000000"):
        reply = await client.get(base + call_id)
        assert reply.status_code == 404
        assert reply.json()["ok"] is False
        assert reply.json()["error"]
