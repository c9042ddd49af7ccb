"""Discovery end to end: the daemon as a subprocess finds calls nobody tracked in the simulator,
and `callwatch backfill` tracks a window once, over real loopback HTTP."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from tests.e2e.harness import DaemonUnderTest, read_events, wait_until
from worker.demo import write_config
from worker.simulator import RecordingScript, Simulator, World, run_simulator
from worker.simulator.faults import Fault
from worker.store.factory import open_store

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(World()) as running:
        yield running


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def discovering_daemon(sim: Simulator, tmp_path: Path, since: float,
                       archive: bool = True) -> DaemonUnderTest:
    config, env = write_config(tmp_path, sim, archive=archive, webhook=False)
    text = config.read_text()
    for key in ("SIM_ULTRAVOX_KEY", "SIM_ENVOY_KEY"):
        text = text.replace(f'api_key_env = "{key}"', f'api_key_env = "{key}"\ndiscover = true\n'
                            f'discover_interval = 1\ndiscover_since = "{rfc3339(since)}"')
    config.write_text(text)
    return DaemonUnderTest(config=config, env=env, workdir=tmp_path)


async def tracked_ids(db: Path) -> Counter[tuple[str, str]]:
    if not db.exists():
        return Counter()
    store = await open_store(db)
    try:
        calls = await store.list_calls(limit=1_000_000, include_terminal=True)
    finally:
        await store.close()
    return Counter((c.provider, c.call_id) for c in calls)


async def test_discovered_calls_are_handled_like_tracked_ones(sim: Simulator,
                                                              tmp_path: Path) -> None:
    """Calls created only in the simulator get call.started, call.ended, their recording
    archived and call.completed; calls created before discover_since are never tracked."""
    now = time.time()
    old = [sim.world.add_call(p, created_at=now - 3600) for p in ("ultravox", "envoy")]
    new = [sim.world.add_call(p, starts_after=1, lasts=2,
                              recordings=[RecordingScript(ready_after=1, size=32 * 1024)])
           for p in ("ultravox", "envoy", "ultravox", "envoy")]
    daemon = discovering_daemon(sim, tmp_path, since=now - 60)
    daemon.start()
    try:
        await daemon.wait_ready()

        async def all_completed() -> bool:
            if not daemon.db.exists():
                return False
            done = {(e.provider, e.call_id) for e in await read_events(daemon.db)
                    if e.type == "call.completed"}
            return all((s.provider, s.call_id) in done for s in new)

        await wait_until(all_completed, 60, "call.completed for every discovered call", daemon)
    finally:
        assert await daemon.stop() == 0
    events = await read_events(daemon.db)
    for script in new:
        kinds = [e.type for e in events if e.call_id == script.call_id]
        assert kinds.count("call.started") == 1, kinds
        assert kinds.count("call.ended") == 1, kinds
        assert kinds.count("recording.archived") == 1, kinds
        assert kinds.count("call.completed") == 1, kinds
    tracked = await tracked_ids(daemon.db)
    assert not any((s.provider, s.call_id) in tracked for s in old)
    assert set(tracked) == {(s.provider, s.call_id) for s in new}
    assert len(list((tmp_path / "recordings").rglob("*.wav"))) == 2  # the Ultravox ones
    assert any(line.get("event") == "discovery.swept" for line in daemon.log_lines())


async def test_a_restart_mid_sweep_neither_misses_nor_duplicates(sim: Simulator,
                                                                 tmp_path: Path) -> None:
    """SIGKILL while the list is being read (slowed pages); after a restart every call in the
    window is tracked exactly once."""
    now = time.time()
    scripts = [sim.world.add_call("ultravox", created_at=now - 50 + i / 100, starts_after=None,
                                  recordings=()) for i in range(800)]
    sim.faults["ultravox"].add(Fault.SLOW, delay=0.3, match="/api/calls")
    daemon = discovering_daemon(sim, tmp_path, since=now - 60, archive=False)
    daemon.start()
    try:
        await wait_until(lambda: _tracked_some(daemon), 30, "a first page tracked", daemon)
        daemon.kill()
        partial = await tracked_ids(daemon.db)
        assert 0 < len(partial) < len(scripts)
        sim.faults["ultravox"].clear()
        daemon.start()

        async def all_tracked() -> bool:
            return len(await tracked_ids(daemon.db)) >= len(scripts)

        await wait_until(all_tracked, 60, "every call tracked", daemon)
    finally:
        await daemon.stop()
    tracked = await tracked_ids(daemon.db)
    assert set(tracked) == {("ultravox", s.call_id) for s in scripts}
    assert max(tracked.values()) == 1


async def _tracked_some(daemon: DaemonUnderTest) -> bool:
    return len(await tracked_ids(daemon.db)) > 0


def backfill(config: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", "--config", str(config), "backfill", *args],
        env={**env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120,
        check=False)


async def test_backfill_tracks_a_window_once_and_is_idempotent(sim: Simulator,
                                                               tmp_path: Path) -> None:
    """backfill tracks the window's calls, prints found/already/new, and a rerun adds none."""
    now = float(int(time.time()))  # whole seconds: the window's ends are exact in RFC 3339
    inside = [sim.world.add_call("envoy", created_at=now - 1000 + i) for i in range(230)]
    sim.world.add_call("envoy", created_at=now - 5000)  # before --since
    config, env = write_config(tmp_path, sim, archive=False, webhook=False)
    since, until = rfc3339(now - 1000), rfc3339(now - 1000 + 229)
    dry = await anyio.to_thread.run_sync(
        lambda: backfill(config, env, "envoy", "--since", since, "--until", until, "--dry-run"))
    assert dry.returncode == 0, dry.stderr
    assert "found 230, already tracked 0, would track 230" in dry.stdout
    assert await tracked_ids(tmp_path / "callwatch.db") == Counter()
    first = await anyio.to_thread.run_sync(
        lambda: backfill(config, env, "envoy", "--since", since, "--until", until))
    assert first.returncode == 0, first.stderr
    assert "found 230, already tracked 0, newly tracked 230" in first.stdout
    # The plain progress line (no terminal), at the first batch of pages written.
    assert re.match(r"pages [1-3], calls found \d+, new \d+", first.stderr), first.stderr
    again = await anyio.to_thread.run_sync(
        lambda: backfill(config, env, "envoy", "--since", since))
    assert again.returncode == 0, again.stderr
    assert "found 230, already tracked 230, newly tracked 0" in again.stdout
    tracked = await tracked_ids(tmp_path / "callwatch.db")
    assert set(tracked) == {("envoy", s.call_id) for s in inside}


@pytest.mark.parametrize(("args", "fragment"), [
    (["envoy", "--since", "yesterday"], "--since 'yesterday' is not an RFC 3339 time"),
    (["envoy", "--since", "2026-12-02T00:00:00Z", "--until", "2026-12-01T00:00:00Z"],
     "--until is before --since"),
    (["apifycloud", "--since", "2026-12-01T00:00:00Z"], "has no list endpoint"),
])
async def test_backfill_bad_input_is_one_line_and_exit_2(sim: Simulator, tmp_path: Path,
                                                         args: list[str], fragment: str) -> None:
    """A bad TIME, an empty window or a provider without a list: exit 2, one line."""
    config, env = write_config(tmp_path, sim, archive=False, webhook=False)
    result = await anyio.to_thread.run_sync(lambda: backfill(config, env, *args))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and fragment in result.stderr


def test_the_demo_shows_a_discovered_call() -> None:
    """callwatch demo leaves one call untracked; discovery finds it and it settles too."""
    result = subprocess.run(  # the demo brings its own simulator
        [sys.executable, "-m", "worker", "demo", "--calls", "3"], capture_output=True,
        text=True, timeout=180, check=False, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    found = next(line for line in lines if "never tracked" in line).split()[3]  # its id
    assert any(found in line and "call.completed" in line for line in lines)
    assert "calls:       4 completed" in result.stdout
