"""The daemon as a subprocess archives recordings from the simulator over loopback HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.archive.rig import count_gets
from tests.e2e.harness import DaemonUnderTest, read_events, wait_until
from tests.e2e.test_daemon import track_directly
from worker.demo import write_config
from worker.simulator import (
    Fault,
    RecordingScript,
    Simulator,
    World,
    expected_sha256,
    run_simulator,
)
from worker.simulator.world import CallScript
from worker.store.sqlite import SQLiteStore

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

KIB = 1024


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(World()) as running:
        yield running


def archiving_daemon(sim: Simulator, tmp_path: Path, archive: str = "") -> DaemonUnderTest:
    config, env = write_config(tmp_path, sim, archive=True, webhook=False,
                               extra="[archive]\n" + archive)
    return DaemonUnderTest(config=config, env=env, workdir=tmp_path)


def final_files(archive: Path) -> list[Path]:
    return sorted(p for p in archive.rglob("*")
                  if p.is_file() and ".partial" not in p.relative_to(archive).parts)


def partial_bytes(archive: Path) -> int:
    scratch = archive / ".partial"
    return sum(p.stat().st_size for p in scratch.iterdir()) if scratch.exists() else 0


async def settled(db: Path, scripts: list[CallScript]) -> bool:
    if not db.exists():
        return False
    events = await read_events(db)
    done = {(e.provider, e.call_id) for e in events if e.type == "call.completed"}
    return all((s.provider, s.call_id) in done for s in scripts)


async def test_the_daemon_archives_every_provider_before_completing(sim: Simulator,
                                                                    tmp_path: Path) -> None:
    """recording.archived (with path, size, digest) comes before call.completed, files match."""
    scripts = [sim.world.add_call(provider, starts_after=0.2, lasts=0.5, recordings=[
        RecordingScript(ready_after=0.3, size=(300 + 10 * i) * KIB)])
        for i, provider in enumerate(("ultravox", "envoy", "apifycloud"))]
    daemon = archiving_daemon(sim, tmp_path)
    for script in scripts:
        done = subprocess.run([sys.executable, "-m", "worker", "--config", str(daemon.config),
                               "track", script.provider, script.call_id],
                              capture_output=True, text=True, env=dict(daemon.env), check=False)
        assert done.returncode == 0, done.stderr
    daemon.start()
    try:
        await wait_until(lambda: settled(daemon.db, scripts), 30, "calls completed", daemon)
    finally:
        assert await daemon.stop() == 0
    events = await read_events(daemon.db)
    archive = tmp_path / "recordings"
    for script in scripts:
        types = [e.type for e in events if e.call_id == script.call_id]
        assert types == ["call.started", "call.ended", "recording.available",
                         "recording.archived", "call.completed"], types
        body = json.loads(next(e.body for e in events if e.call_id == script.call_id
                               and e.type == "recording.archived"))
        stored = body["data"]["recording"]["archive"]
        assert stored["sha256"] == expected_sha256(script.recordings[0])
        assert (archive / stored["path"]).stat().st_size == stored["size"]
    assert len(final_files(archive)) == 3 and partial_bytes(archive) == 0
    shown = subprocess.run([sys.executable, "-m", "worker", "--config", str(daemon.config),
                            "status", "envoy", scripts[1].call_id], capture_output=True,
                           text=True, env=dict(daemon.env), check=False)
    assert f"sha256  {expected_sha256(scripts[1].recordings[0])}" in shown.stdout


async def test_kill_9_mid_download_leaves_no_final_file_and_restart_archives(
        sim: Simulator, tmp_path: Path) -> None:
    """SIGKILL while bytes stream: nothing under a final name; after restart, the right file."""
    script = sim.world.add_call("apifycloud", starts_after=0, lasts=0.3, recordings=[
        RecordingScript(ready_after=0.2, size=4096 * KIB)])
    # The first GET sends 1 MiB, then stalls (long after the kill): a download caught mid-way.
    sim.faults["files"].add(Fault.EXPIRE_MID_DOWNLOAD, after=1024 * KIB, stall=60, count=1)
    gets: Counter[str] = count_gets(sim)
    daemon = archiving_daemon(sim, tmp_path, "timeout = 120\n")
    archive = tmp_path / "recordings"
    await track_directly(daemon.db, [script])
    daemon.start()
    try:
        await wait_until(lambda: partial_bytes(archive) >= 1024 * KIB, 20,
                         "a half-done download", daemon)
        daemon.kill()
        assert final_files(archive) == []
        assert partial_bytes(archive) == 1024 * KIB  # the dead run's scratch file
        daemon.start()
        await wait_until(lambda: settled(daemon.db, [script]), 30, "archived after restart",
                         daemon)
    finally:
        assert await daemon.stop() == 0
    assert daemon.exit_codes[0] == -9
    [archived] = final_files(archive)
    assert archived.stat().st_size == 4096 * KIB
    store = await SQLiteStore.open(daemon.db)
    try:
        call = await store.get_call("apifycloud", script.call_id)
    finally:
        await store.close()
    assert call is not None
    assert call.recordings[0].archive_sha256 == expected_sha256(script.recordings[0])
    assert partial_bytes(archive) == 0
    types = [e.type for e in await read_events(daemon.db)]
    assert types.count("recording.archived") == 1 and types[-1] == "call.completed"
    assert sum(gets.values()) >= 2
    assert any(line.get("event") == "archive.partials_removed" for line in daemon.log_lines())
