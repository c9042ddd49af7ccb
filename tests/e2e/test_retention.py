"""Retention end to end: the daemon prunes settled calls; ``callwatch prune`` on a real file."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from tests.e2e.harness import DaemonUnderTest, read_events, wait_until
from worker.demo import write_config
from worker.simulator import Simulator, World, run_simulator
from worker.simulator.world import CallScript, RecordingScript
from worker.store.sqlite import SQLiteStore

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(World()) as running:
        yield running


def cli(daemon: DaemonUnderTest, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker", "--config", str(daemon.config), *args],
                          capture_output=True, text=True, env={**daemon.env}, check=False)


def calls(sim: Simulator, n: int) -> list[CallScript]:
    return [sim.world.add_call("envoy", starts_after=0.2, lasts=0.5,
                               recordings=[RecordingScript(ready_after=0.2, size=2048)])
            for _ in range(n)]


async def settled_and_delivered(db: Path, n: int) -> bool:
    """``n`` calls completed and every delivery finished (none left pending)."""
    if not db.exists():
        return False
    store = await SQLiteStore.open(db)
    try:
        done = sum(e.type == "call.completed" for e in await store.events_after(0, 10_000))
        pending = (await store.delivery_counts()).pending
    finally:
        await store.close()
    return done >= n and pending == 0


async def test_prune_removes_settled_calls_keeps_pending_ones_and_never_recordings(
        sim: Simulator, tmp_path: Path) -> None:
    """prune: dry run removes nothing; a call with a pending delivery stays; files stay."""
    config, env = write_config(tmp_path, sim, archive=True, webhook=True)
    daemon = DaemonUnderTest(config=config, env=env, workdir=tmp_path)
    scripts = calls(sim, 3)
    for script in scripts:
        assert cli(daemon, "track", script.provider, script.call_id).returncode == 0
    daemon.start()
    try:
        await wait_until(lambda: settled_and_delivered(daemon.db, 3), 40, "calls settled",
                         daemon)
    finally:
        assert await daemon.stop() == 0
    recordings = sorted(p for p in (tmp_path / "recordings").rglob("*") if p.is_file())
    assert recordings
    kept = scripts[0]
    [event] = [e for e in await read_events(daemon.db)
               if e.call_id == kept.call_id and e.type == "call.completed"]
    assert cli(daemon, "replay", event.id).returncode == 0  # its delivery is pending again

    dry = cli(daemon, "prune", "--dry-run", "--older-than", "0")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would remove envoy ") == 2 and kept.call_id not in dry.stdout
    assert "2 settled calls would be removed" in dry.stdout
    assert cli(daemon, "status", "envoy", scripts[1].call_id).returncode == 0

    done = cli(daemon, "prune", "--older-than", "0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("removed envoy ") == 2 and "2 settled calls removed" in done.stdout
    assert done.stderr == ""  # no progress lines on a pipe for a prune this short
    gone = cli(daemon, "status", "envoy", scripts[1].call_id)
    assert gone.returncode == 1 and "not tracked" in (gone.stdout + gone.stderr)
    assert cli(daemon, "status", "envoy", kept.call_id).returncode == 0
    assert sorted(p for p in (tmp_path / "recordings").rglob("*") if p.is_file()) == recordings

    again = cli(daemon, "track", "envoy", scripts[1].call_id)
    assert again.returncode == 0 and again.stdout.startswith("tracking:")  # afresh
    assert [e for e in await read_events(daemon.db) if e.call_id == scripts[1].call_id] == []


async def test_the_daemon_prunes_settled_calls_on_its_own(sim: Simulator,
                                                          tmp_path: Path) -> None:
    """With [retention] settled_calls = 2 the running daemon deletes settled calls."""
    config, env = write_config(tmp_path, sim, archive=True, webhook=True,
                               extra="\n[retention]\nsettled_calls = 2\n")
    daemon = DaemonUnderTest(config=config, env=env, workdir=tmp_path)
    scripts = calls(sim, 2)
    for script in scripts:
        assert cli(daemon, "track", script.provider, script.call_id).returncode == 0
    daemon.start()
    try:
        await wait_until(lambda: any(line.get("event") == "retention.pruned"
                                     for line in daemon.log_lines()), 60, "retention.pruned",
                         daemon)
        await anyio.sleep(0.1)
        async def all_gone() -> bool:
            return all(cli(daemon, "status", s.provider, s.call_id).returncode == 1
                       for s in scripts)
        await wait_until(all_gone, 30, "every settled call pruned", daemon)
    finally:
        assert await daemon.stop() == 0
    assert any(p.is_file() for p in (tmp_path / "recordings").rglob("*"))
