"""A long download shows bytes, rate and ETA in status, the HTTP API and /metrics."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import DaemonUnderTest, wait_until
from worker.demo import write_config
from worker.simulator import Simulator, World, run_simulator
from worker.simulator.faults import Fault
from worker.simulator.world import RecordingScript

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]
KIB = 1024
TOKEN = "progress-test-token-0123456789"  # noqa: S105 - a test credential


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(World()) as running:
        yield running


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sample(metrics: str, name: str) -> float:
    """The value of the one sample called ``name`` (with its labels) in a scrape."""
    [line] = [x for x in metrics.splitlines() if x.startswith(name + " ")]
    return float(line.split()[-1])


def status(daemon: DaemonUnderTest, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker", "--config", str(daemon.config),
                           "status", *args], capture_output=True, text=True,
                          env={**daemon.env}, check=False)


async def test_a_dripping_download_reports_its_progress_everywhere(sim: Simulator,
                                                                   tmp_path: Path) -> None:
    """256 KiB at once, then a byte every 0.5 s: status, GET /v1/calls and /metrics say so."""
    port = free_port()
    call = sim.world.add_call("envoy", starts_after=0, lasts=0.3, recordings=[
        RecordingScript(ready_after=0.2, size=1024 * KIB)])
    sim.faults["files"].add(Fault.DRIP, after=256 * KIB, delay=0.5, count=1,
                            match=call.call_id)
    extra = f'\n[api]\nlisten = "127.0.0.1:{port}"\ntoken_env = "CW_API_TOKEN"\n'
    config, env = write_config(tmp_path, sim, archive=True, webhook=False, extra=extra)
    daemon = DaemonUnderTest(config=config, env={**env, "CW_API_TOKEN": TOKEN},
                             workdir=tmp_path)
    track = subprocess.run([sys.executable, "-m", "worker", "--config", str(config), "track",
                            "envoy", call.call_id], capture_output=True, text=True,
                           env={**daemon.env}, check=False)
    assert track.returncode == 0, track.stderr
    daemon.start()
    try:
        def shown() -> bool:
            return "KiB of 1.0 MiB" in status(daemon, "envoy", call.call_id).stdout

        await wait_until(shown, 40, "status showing the download's progress", daemon)
        detail = status(daemon, "envoy", call.call_id).stdout
        line = next(x for x in detail.splitlines() if "downloading now" in x)
        assert "256." in line and "/s" in line and "left" in line, line
        progress = json.loads(status(daemon, "envoy", call.call_id, "--json").stdout)[
            "downloads"]
        [(_, one)] = progress.items()
        assert one["progress"]["total"] == 1024 * KIB
        assert one["progress"]["bytes"] >= 256 * KIB

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            reply = await http.get(f"/v1/calls/envoy/{call.call_id}")
            assert reply.status_code == 200, reply.text
            [(_, live)] = reply.json()["downloads"].items()
            assert live["in_progress"] and live["progress"]["bytes"] >= 256 * KIB
            assert live["progress"]["eta_seconds"] is not None
            metrics = (await http.get("/metrics")).text
        assert sample(metrics, "callwatch_download_bytes_in_flight") >= 256 * KIB
        assert sample(metrics, "callwatch_database_size_bytes") > 0
        assert sample(metrics, 'callwatch_rows{table="calls"}') == 1
    finally:
        daemon.kill()
