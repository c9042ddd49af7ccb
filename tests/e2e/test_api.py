"""The daemon's HTTP API end to end: the daemon as a subprocess, the simulator on loopback."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import DaemonUnderTest, read_events, wait_until
from worker.demo import write_config
from worker.simulator import Simulator, World, run_simulator
from worker.simulator.ultravox_webhooks import ultravox_webhook

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

TOKEN = "e2e-api-token-3c9d"  # noqa: S105 - a test credential
HOOK_SECRET = "e2e-ultravox-hook-secret"  # noqa: S105
SLOW = {"poll_interval": 30, "pending_poll_interval": 30, "recording_poll_interval": 30,
        "recording_grace": 60, "not_found_grace": 60, "max_tracking_age": 600}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(World()) as running:
        yield running


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def api_daemon(sim: Simulator, tmp_path: Path, port: int) -> DaemonUnderTest:
    """A daemon that polls every 30 s, with the API and the Ultravox webhook on."""
    extra = (f'\n[api]\nlisten = "127.0.0.1:{port}"\ntoken_env = "CW_API_TOKEN"\n'
             'ultravox_webhook_secret_env = "CW_ULTRAVOX_HOOK"\n')
    config, env = write_config(tmp_path, sim, archive=False, webhook=True, tracking=SLOW,
                               extra=extra)
    env = {**env, "CW_API_TOKEN": TOKEN, "CW_ULTRAVOX_HOOK": HOOK_SECRET}
    return DaemonUnderTest(config=config, env=env, workdir=tmp_path)


async def first_event_at(db: Path, kind: str) -> float | None:
    for event in await read_events(db):
        if event.type == kind:
            return event.occurred_at
    return None


async def test_ultravox_webhook_makes_the_daemon_notice_the_end_at_once(
        sim: Simulator, tmp_path: Path) -> None:
    """Tracked via POST /v1/calls, ended, signed call.ended: noticed in well under a second."""
    port = free_port()
    daemon = api_daemon(sim, tmp_path, port)
    script = sim.world.add_call("ultravox", starts_after=0, lasts=None)
    daemon.start()
    try:
        await daemon.wait_ready()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            assert (await api.get("/healthz")).status_code == 200
            reply = await api.post("/v1/calls", json={"provider": "ultravox",
                                                      "call_id": script.call_id,
                                                      "metadata": {"e2e": True}})
            assert reply.status_code == 201, reply.text
            await wait_until(lambda: first_event_at(daemon.db, "call.started"), 5,
                             "call.started from the first poll", daemon)

            sim.world.end_call("ultravox", script.call_id)
            ended = time.time()
            body, headers = ultravox_webhook(sim.world.script("ultravox", script.call_id),
                                             "call.ended", [HOOK_SECRET], time.time())
            hook = await api.post("/v1/providers/ultravox/webhook", content=body,
                                  headers=headers)
            assert hook.status_code == 200, hook.text
            await wait_until(lambda: first_event_at(daemon.db, "call.ended"), 5,
                             "call.ended after the webhook", daemon)
            noticed = await first_event_at(daemon.db, "call.ended")
            assert noticed is not None
            # The next regular poll was 30 s away: only the webhook explains this.
            assert noticed - ended < 0.5, (noticed - ended, daemon.log_tail())

            state = (await api.get(f"/v1/calls/ultravox/{script.call_id}")).json()
            assert state["status"] == "ended"
            assert [e["type"] for e in state["events"]][:2] == ["call.started", "call.ended"]
            scrape = (await api.get("/metrics")).text
        families = {f.name: f for f in text_string_to_metric_families(scrape)}
        polled = [s.value for s in families["callwatch_ultravox_webhooks"].samples
                  if s.labels == {"outcome": "polled"}]
        assert polled == [1]
        await sim.sink.wait_for(
            lambda reqs: any(r.json()["type"] == "call.ended" for r in reqs), timeout=5)
    finally:
        assert await daemon.stop() == 0
    lines = daemon.log_lines()
    assert any(line.get("event") == "api.listening" for line in lines)
    assert not any(line.get("event") == "api.error" for line in lines)
    assert TOKEN not in daemon.log.read_text()
