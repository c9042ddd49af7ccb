"""Day-2 operations against a real daemon subprocess: untrack, the call list, heartbeats."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.e2e.harness import DaemonUnderTest, read_events, wait_until
from worker.demo import FAST_TRACKING, write_config
from worker.simulator import Simulator, World, run_simulator
from worker.store.sqlite import SQLiteStore

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

TOKEN = "e2e-operator-token-7a1f"  # noqa: S105 - a test credential
WIDTH = 100


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(World()) as running:
        yield running


def daemon_for(sim: Simulator, tmp_path: Path, port: int | None = None) -> DaemonUnderTest:
    """Fast polls, the simulator's sink as the one endpoint, the API on ``port`` if given."""
    extra = (f'\n[api]\nlisten = "127.0.0.1:{port}"\ntoken_env = "CW_API_TOKEN"\n'
             if port is not None else "")
    config, env = write_config(tmp_path, sim, archive=False, webhook=True,
                               tracking=FAST_TRACKING, extra=extra)
    return DaemonUnderTest(config=config, env={**env, "CW_API_TOKEN": TOKEN},
                           workdir=tmp_path)


async def cli(daemon: DaemonUnderTest, *args: str) -> tuple[int, str, str]:
    """Run a command as a subprocess without blocking the loop the simulator answers on."""
    done = await anyio.run_process(
        [sys.executable, "-m", "worker", "--config", str(daemon.config), *args],
        env={**daemon.env}, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def status_json(daemon: DaemonUnderTest) -> dict[str, Any]:
    code, out, err = await cli(daemon, "status", "--json")
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


async def last_polled(db: Path, call_id: str) -> float | None:
    store = await SQLiteStore.open(db)
    try:
        call = await store.get_call("envoy", call_id)
        assert call is not None
        return call.last_polled_at
    finally:
        await store.close()


async def test_untrack_stops_polling_emits_nothing_and_queued_deliveries_still_go_out(
        sim: Simulator, tmp_path: Path) -> None:
    """After `callwatch untrack`: no poll, no event, and the failing delivery still arrives."""
    script = sim.world.add_call("envoy", starts_after=0, lasts=None, recordings=())
    sim.sink.behave(status=503)
    daemon = daemon_for(sim, tmp_path)
    code, _, _ = await cli(daemon, "track", "envoy", script.call_id)
    assert code == 0
    daemon.start()
    try:
        await daemon.wait_ready()
        await sim.sink.wait_for(lambda r: any(x.status == 503 for x in r), timeout=15)
        [started] = [e for e in await read_events(daemon.db) if e.type == "call.started"]
        code, out, err = await cli(daemon, "untrack", "envoy", script.call_id)
        assert (code, out, err) == (0, f"untracked: envoy {script.call_id}\n", "")
        await anyio.sleep(1.5)  # a poll that was in flight at the untrack has committed
        polled = await last_polled(daemon.db, script.call_id)
        sim.world.end_call("envoy", script.call_id)  # polling on would now emit call.ended
        sim.sink.behave(status=200)
        await sim.sink.wait_for(lambda r: any(x.status == 200 and x.header("webhook-id")
                                              == started.id for x in r), timeout=15)
        await anyio.sleep(3)  # six poll intervals
        assert await last_polled(daemon.db, script.call_id) == polled
        assert [e.type for e in await read_events(daemon.db)] == ["call.started"]
        code, _, _ = await cli(daemon, "untrack", "envoy", script.call_id)
        assert code == 0  # again: still 0
        code, out, err = await cli(daemon, "untrack", "envoy", "call_unknown")
        assert code == 1 and out == "" and err.count("\n") == 1
        code, shown, _ = await cli(daemon, "deliveries", "show", started.id)
        code_json, shown_json, _ = await cli(daemon, "deliveries", "show", started.id, "--json")
    finally:
        assert await daemon.stop() == 0
    assert code == 0 and all(len(line) <= WIDTH for line in shown.splitlines())
    attempts = json.loads(shown_json)["attempts"]
    assert code_json == 0 and [a["status"] for a in attempts][-1] == 200
    assert {a["status"] for a in attempts[:-1]} == {503} and " 503 " in shown
    assert all(a["endpoint"] == sim.sink_url.split("?")[0] for a in attempts)
    assert attempts[-1]["reply"] and attempts[-1]["duration_ms"] >= 0  # the logged reply


async def test_the_api_lists_calls_by_cursor_and_untracks(sim: Simulator,
                                                         tmp_path: Path) -> None:
    """GET /v1/calls pages newest first by cursor; DELETE answers 204, then 404 if unknown."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    daemon = daemon_for(sim, tmp_path, port)
    scripts = [sim.world.add_call("envoy", starts_after=0, lasts=None, recordings=())
               for _ in range(3)]
    daemon.start()
    try:
        await daemon.wait_ready()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            for script in scripts:
                reply = await api.post("/v1/calls", json={"provider": "envoy",
                                                          "call_id": script.call_id})
                assert reply.status_code == 201, reply.text
            first = (await api.get("/v1/calls", params={"limit": 2})).json()
            second = (await api.get("/v1/calls", params={"limit": 2,
                                                         "cursor": first["next_cursor"]})).json()
            assert [c["call_id"] for c in first["calls"] + second["calls"]] == \
                [s.call_id for s in reversed(scripts)]
            assert second["next_cursor"] is None
            gone = scripts[1].call_id
            assert (await api.delete(f"/v1/calls/envoy/{gone}")).status_code == 204
            assert (await api.delete(f"/v1/calls/envoy/{gone}")).status_code == 204
            assert (await api.delete("/v1/calls/envoy/call_unknown")).status_code == 404
            untracked = (await api.get("/v1/calls", params={"state": "untracked"})).json()
            assert [c["call_id"] for c in untracked["calls"]] == [gone]
    finally:
        assert await daemon.stop() == 0


async def test_status_says_running_then_stopped_after_sigterm_and_stale_after_sigkill(
        sim: Simulator, tmp_path: Path) -> None:
    """The heartbeat row: running with the daemon's pid; removed by SIGTERM; left by SIGKILL."""
    daemon = daemon_for(sim, tmp_path)
    daemon.start()
    await daemon.wait_ready()
    assert daemon.proc is not None
    pid = daemon.proc.pid

    async def state() -> str:
        return str((await status_json(daemon))["daemon"]["state"])

    await wait_until(lambda: _is(state, "running"), 15, "a heartbeat", daemon)
    [worker] = (await status_json(daemon))["daemon"]["workers"]
    assert worker["pid"] == pid and worker["version"] and worker["uptime_seconds"] >= 0
    code, out, _ = await cli(daemon, "status")
    assert code == 0 and out.startswith(f"daemon: running (pid {pid} on ")
    assert await daemon.stop() == 0
    assert await state() == "stopped"
    code, out, _ = await cli(daemon, "status")
    assert out.startswith("daemon: stopped")

    daemon.start()
    await daemon.wait_ready()
    await wait_until(lambda: _is(state, "running"), 15, "a heartbeat", daemon)
    daemon.kill()
    data = await status_json(daemon)
    assert data["daemon"]["state"] == "stale"
    assert data["daemon"]["workers"][0]["why"] == "its process is gone"

    daemon.start()  # the next daemon on this host forgets the killed one's row
    await daemon.wait_ready()
    await wait_until(lambda: _is(state, "running"), 15, "a heartbeat", daemon)
    assert len((await status_json(daemon))["daemon"]["workers"]) == 1
    assert await daemon.stop() == 0


async def _is(read: Any, wanted: str) -> bool:
    return bool(await read() == wanted)
