"""Three `callwatch run` workers on one PostgreSQL database, as real subprocesses.

Calls with recordings and webhooks through the simulator; workers SIGKILLed mid-way; the
server's connections cut under running workers. What must hold (CONTRACT.md, "Database:
SQLite or PostgreSQL"): every event delivered, first arrivals in order per call, each
event once in the outbox, every recording archived once and intact, and no call polled by
two workers at once.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from tests.e2e.harness import DaemonUnderTest, wait_until
from tests.e2e.test_webhooks import FAST, by_call, by_call_events, cli
from worker.database_url import parse_postgres_url
from worker.demo import write_config
from worker.simulator import Simulator, World, run_simulator
from worker.simulator.faults import Fault
from worker.simulator.world import RecordingScript
from worker.store.base import StoredEvent
from worker.store.postgres import PostgresStore

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]
LEASE = 5  # the shortest lease_seconds allowed: a dead worker's calls come back in 5 s


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(World()) as running:
        yield running


def workers(sim: Simulator, tmp_path: Path, pg_url: str, count: int) -> list[DaemonUnderTest]:
    """``count`` daemons with one config (one database, one archive folder), a log each."""
    config, env = write_config(tmp_path, sim, archive=True, webhook=True, tracking=FAST)
    text = config.read_text().replace('database = "callwatch.db"',
                                      f'database = "{pg_url}"\nlease_seconds = {LEASE}')
    config.write_text(text)
    daemons = []
    for n in range(count):
        (tmp_path / f"w{n}").mkdir()
        daemons.append(DaemonUnderTest(config=config, env=env, workdir=tmp_path / f"w{n}"))
    return daemons


async def outbox(pg_url: str) -> list[StoredEvent]:
    store = await PostgresStore.open(parse_postgres_url(pg_url), migrate=False)
    try:
        return await store.events_after(0, 1_000_000)
    finally:
        await store.close()


async def settled(pg_url: str, calls: int) -> bool:
    done = [e for e in await outbox(pg_url)
            if e.type in ("call.completed", "call.tracking_failed")]
    return len(done) >= calls


async def test_three_workers_share_the_work_and_survive_two_kills(
        sim: Simulator, tmp_path: Path, pg_url: str) -> None:
    """Three workers start at once on an empty database; two are SIGKILLed mid-way; every
    event arrives once in order per call, every recording is archived once, intact, and no
    call is ever polled by two workers at once."""
    scripts = [sim.world.add_call(p, starts_after=0.2, lasts=1.0 + 0.4 * n,
                                  recordings=[RecordingScript(ready_after=0.3, size=4096)])
               for n in range(4) for p in ("ultravox", "envoy", "apifycloud")]
    daemons = workers(sim, tmp_path, pg_url, 3)
    sim.sink.behave(delay=0.2)
    for daemon in daemons:  # at once, on a database nobody has migrated yet
        daemon.start()
    try:
        for daemon in daemons:
            await daemon.wait_ready(30)
        for script in scripts:
            assert cli(daemons[0], "track", script.provider, script.call_id).returncode == 0
        await sim.sink.wait_for(lambda r: len(r) >= 6, timeout=30)
        daemons[0].kill()
        await sim.sink.wait_for(lambda r: len(r) >= 20, timeout=30)
        daemons[1].kill()
        await wait_until(lambda: settled(pg_url, len(scripts)), 90, "calls settled", daemons[2])
        events = await outbox(pg_url)
        ok = {e.id for e in events}
        await sim.sink.wait_for(lambda r: ok <= {x.header("webhook-id") for x in r
                                                 if x.status == 200}, timeout=30)
    finally:
        assert await daemons[2].stop() == 0
    assert [d.exit_codes for d in daemons] == [[-9], [-9], [0]]
    assert by_call(sim.sink.requests) == by_call_events(events)
    keys = Counter((e.call_id, e.type, e.id) for e in events)
    assert set(keys.values()) == {1}
    archived = [e for e in events if e.type == "recording.archived"]
    assert len(archived) == len(scripts)  # one recording each, archived once
    root = tmp_path / "recordings"
    files = {p.relative_to(root).as_posix() for p in root.rglob("*")
             if p.is_file() and ".partial" not in p.parts}  # a killed download's leftover
    stored = [_archive(e) for e in archived]
    assert files == {a["path"] for a in stored}
    for entry in stored:
        content = (root / entry["path"]).read_bytes()
        assert len(content) == entry["size"] == 4096
        assert hashlib.sha256(content).hexdigest() == entry["sha256"]
    assert sim.concurrency.most_at_once() == 1
    assert sum(1 for d in daemons[:2] for line in d.log_lines()
               if line.get("event") == "daemon.ready") == 2


async def test_a_download_slower_than_the_lease_stays_with_its_worker(
        sim: Simulator, tmp_path: Path, pg_url: str) -> None:
    """A recording that takes more than twice lease_seconds to download, with a second
    worker idle beside the first: the heartbeat keeps the job's lease, so it is downloaded
    by one worker, once, and archived once, intact."""
    size = 16 * 1024
    script = sim.world.add_call("envoy", starts_after=0, lasts=0.3,
                                recordings=[RecordingScript(ready_after=0.2, size=size)])
    dripped = 24  # the last bytes, one every 0.5 s: 12 s
    drip = sim.faults["files"].add(Fault.DRIP, after=size - dripped, delay=0.5,
                                   match=script.call_id)
    daemons = workers(sim, tmp_path, pg_url, 2)
    for daemon in daemons:
        daemon.start()
    try:
        for daemon in daemons:
            await daemon.wait_ready(30)
        assert cli(daemons[0], "track", "envoy", script.call_id).returncode == 0
        await wait_until(lambda: settled(pg_url, 1), 60, "the call settled", daemons[0])
    finally:
        codes = [await d.stop() for d in daemons]
    assert codes == [0, 0]
    assert drip.hits == 1  # a second worker taking the job over would have dripped again
    archived = [e for e in await outbox(pg_url) if e.type == "recording.archived"]
    assert len(archived) == 1
    entry = _archive(archived[0])
    content = (tmp_path / "recordings" / entry["path"]).read_bytes()
    assert len(content) == entry["size"] == size
    assert hashlib.sha256(content).hexdigest() == entry["sha256"]
    took = [float(str(line["seconds"])) for d in daemons for line in d.log_lines()
            if line.get("event") == "recording.archived"]
    assert len(took) == 1 and took[0] > 2 * LEASE  # it did outlast the lease


def _archive(event: StoredEvent) -> dict[str, Any]:
    """The ``archive`` object (path, size, sha256) of a recording.archived event."""
    data = json.loads(event.body)["data"]
    found: dict[str, Any] = data["recording"]["archive"]
    return found


async def test_connections_cut_under_running_workers_lose_nothing(
        sim: Simulator, tmp_path: Path, pg_url: str) -> None:
    """Every connection terminated (as a failover or a server restart does) while two
    workers run: both stay up and every call still settles with its events delivered."""
    scripts = [sim.world.add_call(p, starts_after=0.5, lasts=2.0,
                                  recordings=[RecordingScript(ready_after=0.3, size=2048)])
               for p in ("ultravox", "envoy", "apifycloud")]
    daemons = workers(sim, tmp_path, pg_url, 2)
    for daemon in daemons:
        daemon.start()
    try:
        for daemon in daemons:
            await daemon.wait_ready(30)
        for script in scripts:
            assert cli(daemons[0], "track", script.provider, script.call_id).returncode == 0
        await sim.sink.wait_for(lambda r: len(r) >= 2, timeout=30)
        for _ in range(3):
            admin = await asyncpg.connect(pg_url)
            try:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            finally:
                await admin.close()
            await anyio.sleep(0.5)
        await wait_until(lambda: settled(pg_url, len(scripts)), 60, "calls settled", daemons[0])
        events = await outbox(pg_url)
        ok = {e.id for e in events}
        await sim.sink.wait_for(lambda r: ok <= {x.header("webhook-id") for x in r
                                                 if x.status == 200}, timeout=30)
        assert all(d.proc is not None and d.proc.poll() is None for d in daemons)
    finally:
        codes = [await d.stop() for d in daemons]
    assert codes == [0, 0]
    assert by_call(sim.sink.requests) == by_call_events(events)


def test_the_demo_spreads_over_three_workers(pg_url: str) -> None:
    """`callwatch demo --database URL --workers 3` settles every call and says what each
    worker did."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "worker", "demo", "--calls", "6",
                           "--database", pg_url, "--workers", "3"],
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "done: every call settled" in done.stdout
    assert all(f"worker {n}:" in done.stdout for n in (1, 2, 3))
