"""The daemon as a subprocess against the simulator over real loopback HTTP."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import anyio
import pytest

from tests.e2e.harness import DaemonUnderTest, read_events, wait_until
from worker.demo import write_config
from worker.simulator import Simulator, World, run_simulator
from worker.simulator.world import CallScript, RecordingScript
from worker.store.base import NewCall
from worker.store.sqlite import SQLiteStore

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(World()) as running:
        yield running


def daemon_for(sim: Simulator, tmp_path: Path, **kwargs: object) -> DaemonUnderTest:
    config, env = write_config(tmp_path, sim, archive=False, webhook=False, **kwargs)  # type: ignore[arg-type]
    return DaemonUnderTest(config=config, env=env, workdir=tmp_path)


def track(daemon: DaemonUnderTest, script: CallScript) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", "--config", str(daemon.config), "track",
         script.provider, script.call_id, "--metadata", '{"test": true}'],
        capture_output=True, text=True, env={**daemon.env}, check=False)


def add_calls(world: World, per_provider: int, lasts: float = 1.5) -> list[CallScript]:
    scripts = []
    for i in range(per_provider):
        for provider in ("ultravox", "envoy", "apifycloud"):
            scripts.append(world.add_call(provider, starts_after=0.3, lasts=lasts + 0.4 * i,
                                          recordings=[RecordingScript(ready_after=0.5,
                                                                      size=4096)]))
    return scripts


async def terminal_count(db: Path) -> int:
    events = await read_events(db)
    return sum(e.type in ("call.completed", "call.tracking_failed") for e in events)


def check_histories(events: list, scripts: list[CallScript]) -> None:  # type: ignore[type-arg]
    """Every call: started, ended, recording available, completed - once each, in order."""
    by_call: dict[tuple[str, str], list[str]] = defaultdict(list)
    for event in events:
        by_call[(event.provider, event.call_id)].append(event.type)
    assert set(by_call) == {(s.provider, s.call_id) for s in scripts}
    for key, types in by_call.items():
        assert types == ["call.started", "call.ended", "recording.available",
                         "call.completed"], (key, types)
    ids = Counter(e.id for e in events)
    assert max(ids.values()) == 1


async def test_calls_of_every_provider_complete(sim: Simulator, tmp_path: Path) -> None:
    """Several calls per provider, tracked with the CLI, all reach call.completed exactly once."""
    scripts = add_calls(sim.world, per_provider=2)
    daemon = daemon_for(sim, tmp_path)
    for script in scripts:
        result = track(daemon, script)
        assert result.returncode == 0, result.stderr
    daemon.start()
    try:
        await wait_until(lambda: _all_terminal(daemon.db, len(scripts)), 30, "all calls settled",
                         daemon)
    finally:
        assert await daemon.stop() == 0
    check_histories(await read_events(daemon.db), scripts)
    events = [line["event"] for line in daemon.log_lines()]
    assert "daemon.ready" in events and "daemon.stopped" in events


async def _all_terminal(db: Path, n: int) -> bool:
    return db.exists() and await terminal_count(db) >= n


async def test_call_tracked_while_running_is_picked_up_within_about_a_second(
        sim: Simulator, tmp_path: Path) -> None:
    """`track` from another process reaches a running daemon in about a second."""
    daemon = daemon_for(sim, tmp_path)
    daemon.start()
    try:
        await wait_until(lambda: any(line.get("event") == "daemon.ready"
                                     for line in daemon.log_lines()), 15, "ready", daemon)
        await anyio.sleep(1.5)  # let the daemon go idle
        script = sim.world.add_call("envoy", starts_after=0, lasts=600)
        assert track(daemon, script).returncode == 0
        tracked = time.monotonic()
        await wait_until(lambda: _has_event(daemon.db, "call.started"), 10, "call.started",
                         daemon)
        assert time.monotonic() - tracked < 3.0
    finally:
        assert await daemon.stop() == 0


async def _has_event(db: Path, kind: str) -> bool:
    return any(e.type == kind for e in await read_events(db))


async def test_sigkill_and_restart_lose_and_duplicate_nothing(sim: Simulator,
                                                              tmp_path: Path) -> None:
    """kill -9 mid-run, twice: after restarts every call completes, no event twice or missing."""
    scripts = add_calls(sim.world, per_provider=4, lasts=3.0)
    daemon = daemon_for(sim, tmp_path)
    await track_directly(daemon.db, scripts)  # fast, so the calls are still young at start
    daemon.start()
    try:
        for _ in range(2):
            before = len(await read_events(daemon.db)) if daemon.db.exists() else 0
            await wait_until(partial(_more_events, daemon.db, before), 20, "progress", daemon)
            daemon.kill()
            daemon.start()
        await daemon.wait_ready()
        await wait_until(lambda: _all_terminal(daemon.db, len(scripts)), 40,
                         "all calls settled after kills", daemon)
    finally:
        assert await daemon.stop() == 0
    assert daemon.exit_codes[:2] == [-9, -9]
    check_histories(await read_events(daemon.db), scripts)


async def track_directly(db: Path, scripts: list[CallScript]) -> None:
    store = await SQLiteStore.open(db)
    try:
        for script in scripts:
            await store.track(NewCall(provider=script.provider, call_id=script.call_id),
                              time.time())
    finally:
        await store.close()


async def _more_events(db: Path, before: int) -> bool:
    return db.exists() and len(await read_events(db)) > before


async def test_calls_that_vanish_fail_tracking(sim: Simulator, tmp_path: Path) -> None:
    """A call the provider never heard of ends in call.tracking_failed after not_found_grace."""
    daemon = daemon_for(sim, tmp_path, tracking={"poll_interval": 0.3,
                                                 "pending_poll_interval": 0.3,
                                                 "not_found_grace": 1.0})
    ghost = "call_00000000-0000-4000-8000-000000000000"
    result = subprocess.run([sys.executable, "-m", "worker", "--config", str(daemon.config),
                             "track", "envoy", ghost], capture_output=True, text=True,
                            env=dict(daemon.env), check=False)
    assert result.returncode == 0, result.stderr
    daemon.start()
    try:
        await wait_until(lambda: _has_event(daemon.db, "call.tracking_failed"), 20,
                         "tracking_failed", daemon)
    finally:
        assert await daemon.stop() == 0
    assert [e.type for e in await read_events(daemon.db)] == ["call.tracking_failed"]
