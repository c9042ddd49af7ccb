"""PostgreSQL stopped and started again under a running worker (a private server of its own,
so stopping it disturbs nobody else's tests)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import DaemonUnderTest, wait_until
from tests.e2e.test_postgres_workers import outbox, settled
from tests.e2e.test_webhooks import FAST, by_call, by_call_events, cli
from tests.pg import PrivateCluster, _installed_bindir
from worker.demo import write_config
from worker.simulator import Simulator, World, run_simulator
from worker.simulator.world import RecordingScript

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
def cluster() -> Iterator[tuple[PrivateCluster, str]]:
    bindir = _installed_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries installed to run a private server")
    private = PrivateCluster(bindir)
    try:
        yield private, private.start()
    finally:
        private.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def health(port: int) -> int:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code
    except httpx.HTTPError:
        return 0


async def test_a_restarted_server_turns_health_red_then_work_resumes(
        tmp_path: Path, cluster: tuple[PrivateCluster, str]) -> None:
    """The server goes away under a running worker: the worker stays up, /healthz says 503,
    and once the server is back every call settles with its events delivered in order."""
    server, url = cluster
    port = free_port()
    async with run_simulator(World()) as sim:
        scripts = [sim.world.add_call(p, starts_after=0.5, lasts=3.0,
                                      recordings=[RecordingScript(ready_after=0.3, size=1024)])
                   for p in ("ultravox", "envoy", "apifycloud")]
        daemon = _daemon(sim, tmp_path, url, port)
        daemon.start()
        try:
            await daemon.wait_ready(30)
            for script in scripts:
                assert cli(daemon, "track", script.provider, script.call_id).returncode == 0
            await sim.sink.wait_for(lambda r: len(r) >= 1, timeout=30)
            server.pause()
            await wait_until(lambda: _is(port, 503), 30, "healthz 503", daemon)
            assert daemon.proc is not None and daemon.proc.poll() is None
            server.resume()
            await wait_until(lambda: _is(port, 200), 60, "healthz 200 again", daemon)
            await wait_until(lambda: settled(url, len(scripts)), 60, "calls settled", daemon)
            events = await outbox(url)
            ok = {e.id for e in events}
            # Writes refused during the outage are retried with a back-off of up to 30 s.
            await sim.sink.wait_for(lambda r: ok <= {x.header("webhook-id") for x in r
                                                     if x.status == 200}, timeout=90)
        finally:
            assert await daemon.stop() == 0
        assert by_call(sim.sink.requests) == by_call_events(events)


async def _is(port: int, status: int) -> bool:
    return await health(port) == status


def _daemon(sim: Simulator, tmp_path: Path, url: str, port: int) -> DaemonUnderTest:
    extra = f'\n[api]\nlisten = "127.0.0.1:{port}"\ntoken_env = "CW_API_TOKEN"\n'
    config, env = write_config(tmp_path, sim, archive=True, webhook=True, tracking=FAST,
                               extra=extra)
    config.write_text(config.read_text().replace('database = "callwatch.db"',
                                                 f'database = "{url}"\nlease_seconds = 5'))
    return DaemonUnderTest(config=config, env={**env, "CW_API_TOKEN": "t" * 32},
                           workdir=tmp_path)
