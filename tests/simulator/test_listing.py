"""The simulator's list endpoints over real loopback HTTP: paging, filters, auth, list faults."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import pytest

from tests.simulator.conftest import START, FakeClock, envoy_auth, ultravox_auth
from worker.simulator import Simulator, World
from worker.simulator.faults import Fault
from worker.simulator.listing import HUGE_PAGE_ITEMS


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def add_calls(world: World, provider: str, n: int) -> list[str]:
    return [world.add_call(provider, created_at=START + i).call_id for i in range(n)]


async def all_ultravox(client: httpx.AsyncClient, sim: Simulator, url: str) -> list[str]:
    seen: list[str] = []
    next_url: str | None = url
    while next_url:
        body = (await client.get(next_url, headers=ultravox_auth(sim))).json()
        seen += [item["callId"] for item in body["results"]]
        next_url = body["next"]
    return seen


@pytest.mark.anyio
async def test_ultravox_cursor_pages_cover_the_window_once(
    sim: Simulator, world: World, client: httpx.AsyncClient
) -> None:
    """Following `next` lists each call in [fromDate, toDate] exactly once, oldest first."""
    ids = add_calls(world, "ultravox", 25)
    base = sim.base_urls["ultravox"]
    url = (f"{base}/api/calls?pageSize=7&sort=created&fromDate={rfc3339(START + 3)}"
           f"&toDate={rfc3339(START + 20)}")
    assert await all_ultravox(client, sim, url) == ids[3:21]
    newest = await all_ultravox(client, sim, f"{base}/api/calls?pageSize=4")
    assert newest == ids[::-1]


@pytest.mark.anyio
async def test_ultravox_page_shape_and_auth(
    sim: Simulator, world: World, client: httpx.AsyncClient
) -> None:
    """The reply is {next, previous, results, total}; next is a full URL; no key is a 401."""
    add_calls(world, "ultravox", 3)
    url = f"{sim.base_urls['ultravox']}/api/calls?pageSize=2"
    assert (await client.get(url)).status_code == 401
    body = (await client.get(url, headers=ultravox_auth(sim))).json()
    assert set(body) == {"next", "previous", "results", "total"}
    assert body["total"] == 3 and body["previous"] is None
    assert body["next"].startswith(sim.base_urls["ultravox"] + "/api/calls?")
    last = (await client.get(body["next"], headers=ultravox_auth(sim))).json()
    assert last["next"] is None and last["previous"] is not None
    bad = await client.get(url + "&fromDate=yesterday", headers=ultravox_auth(sim))
    assert bad.status_code == 400


@pytest.mark.anyio
async def test_envoy_numbered_pages_and_limits(
    sim: Simulator, world: World, client: httpx.AsyncClient
) -> None:
    """page/page_size walk every call newest first; page_size above 100 is refused (422)."""
    ids = add_calls(world, "envoy", 45)
    base = f"{sim.base_urls['envoy']}/api/v1/calls"
    assert (await client.get(base)).status_code == 401
    first = (await client.get(base, headers=envoy_auth(sim))).json()
    assert len(first["data"]) == 20
    assert first["pagination"] == {"page": 1, "page_size": 20, "total_count": 45,
                                   "total_pages": 3, "has_next": True, "has_prev": False}
    seen: list[str] = []
    for page in (1, 2, 3):
        body = (await client.get(f"{base}?page={page}&page_size=20",
                                 headers=envoy_auth(sim))).json()
        seen += [item["id"] for item in body["data"]]
    assert seen == ids[::-1]
    assert body["pagination"]["has_next"] is False
    windowed = (await client.get(
        f"{base}?page_size=100&start_date={rfc3339(START + 40)}", headers=envoy_auth(sim))).json()
    assert [item["id"] for item in windowed["data"]] == ids[40:][::-1]
    too_big = await client.get(f"{base}?page_size=101", headers=envoy_auth(sim))
    assert too_big.status_code == 422


@pytest.mark.anyio
async def test_envoy_status_filter(
    sim: Simulator, world: World, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """`status` keeps only the calls in that status now."""
    done = world.add_call("envoy", created_at=START - 100, lasts=1)
    world.add_call("envoy", starts_after=None)
    url = f"{sim.base_urls['envoy']}/api/v1/calls?status=COMPLETED"
    body = (await client.get(url, headers=envoy_auth(sim))).json()
    assert [item["id"] for item in body["data"]] == [done.call_id]


@pytest.mark.anyio
async def test_list_faults(sim: Simulator, world: World, client: httpx.AsyncClient) -> None:
    """Each list fault hits the next list request only, and shapes it as its name says."""
    add_calls(world, "ultravox", 6)
    url = f"{sim.base_urls['ultravox']}/api/calls?pageSize=4&sort=created"
    faults = sim.faults["ultravox"]
    faults.add(Fault.MALFORMED_ITEMS, count=1)
    body = (await client.get(url, headers=ultravox_auth(sim))).json()
    assert "callId" not in body["results"][1]
    assert body["results"][3]["created"] == "the day before yesterday"
    faults.add(Fault.FOREIGN_NEXT, count=1)
    body = (await client.get(url, headers=ultravox_auth(sim))).json()
    assert urlsplit(body["next"]).hostname == "lists.attacker.invalid"
    faults.add(Fault.LOOPING_PAGES, count=1)
    body = (await client.get(url + "&cursor=", headers=ultravox_auth(sim))).json()
    assert body["next"] is not None and "cursor=" in body["next"]
    faults.add(Fault.HUGE_PAGE, count=1)
    body = (await client.get(url, headers=ultravox_auth(sim))).json()
    assert len(body["results"]) == HUGE_PAGE_ITEMS
    normal = (await client.get(url, headers=ultravox_auth(sim))).json()
    assert len(normal["results"]) == 4
