"""Running the simulator: URLs, clean exit, and the ready-made scenarios."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from worker.simulator import PROVIDERS, SCENARIOS, Phase, RecordingPhase, World, run_simulator


@pytest.mark.anyio
async def test_base_urls_are_loopback_origins_on_distinct_ports(client: httpx.AsyncClient) -> None:
    """Each provider's base URL is an origin only (its documented paths go under it)."""
    async with run_simulator() as sim:
        urls = [*sim.base_urls.values(), sim.files_url, sim.control_url]
        for url in urls:
            parts = urlsplit(url)
            assert (parts.scheme, parts.hostname, parts.path) == ("http", "127.0.0.1", "")
        assert len({urlsplit(url).port for url in urls}) == len(urls)
        assert sim.sink_url.startswith("http://127.0.0.1:")
        described = (await client.get(sim.control_url + "/_control/urls")).json()
        assert described["base_urls"] == sim.base_urls


@pytest.mark.anyio
async def test_an_error_in_the_block_propagates_unwrapped_and_servers_stop(
    client: httpx.AsyncClient,
) -> None:
    """An exception raised inside run_simulator comes out as itself; the ports are closed."""
    urls: list[str] = []

    async def fail_inside() -> None:
        async with run_simulator() as sim:
            urls.append(sim.base_urls["apifycloud"])
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await fail_inside()
    with pytest.raises(httpx.ConnectError):
        await client.get(urls[0] + "/api/calls/x")


def test_the_demo_scenario_settles_within_half_a_minute() -> None:
    """Every demo call has ended and every recording settled 30 s after it was added."""
    world = World(clock=lambda: 0.0)
    calls = SCENARIOS["demo"](world)
    assert {call.provider for call in calls} == set(PROVIDERS)
    for call in calls:
        assert call.phase(30) is Phase.ENDED
        for rec in call.recordings:
            assert call.recording_phase(rec, 30) in {
                None,
                RecordingPhase.AVAILABLE,
                RecordingPhase.FAILED,
            }
