"""Store failures against a real daemon: one unstorable call, a corrupt file, SIGTERM."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from tests.e2e.harness import DaemonUnderTest, read_events, wait_until
from worker.demo import write_config
from worker.simulator import Simulator, World, run_simulator
from worker.simulator.world import CallScript
from worker.store.base import NewCall
from worker.store.factory import open_store

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]
# Deeper than json reads or writes at any stack depth: the call fails in the claim (read back)
# or in the writer (encoded), whichever meets it first; both must isolate it. (~950, what
# the issue reproduced through the API, fails or not depending on the stack at that point.)
DEPTH = 3000
SET_ASIDE = ("poll.call_set_aside", "store.call_set_aside")


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(World()) as running:
        yield running


def deep_json(depth: int) -> str:
    return '{"a":' * depth + "{}" + "}" * depth


async def counts_of(db: Path) -> dict[str, int]:
    store = await open_store(db)
    try:
        counts = await store.counts()
    finally:
        await store.close()
    totals: dict[str, int] = {}
    for (_, state), n in counts.calls_by_state.items():
        totals[state] = totals.get(state, 0) + n
    return totals


async def test_an_unstorable_call_is_set_aside_and_the_others_settle(
        sim: Simulator, tmp_path: Path) -> None:
    """Metadata nested ~950 deep (put straight into the store, past any intake check) no
    longer stops every other call: it is set aside, logged at error, and stays so."""
    scripts: list[CallScript] = [sim.world.add_call("envoy", starts_after=0.2, lasts=0.8)
                                 for _ in range(4)]
    config, env = write_config(tmp_path, sim, archive=False, webhook=False)
    daemon = DaemonUnderTest(config=config, env=env, workdir=tmp_path)
    store = await open_store(daemon.db)
    try:
        for n, script in enumerate(scripts):
            assert await store.track(NewCall(provider=script.provider, call_id=script.call_id,
                                             metadata={"n": n}), time.time())
    finally:
        await store.close()
    bad = scripts[1].call_id
    with sqlite3.connect(daemon.db) as conn:  # past every intake check, as an old row would be
        conn.execute("UPDATE calls SET metadata = ? WHERE call_id = ?", (deep_json(DEPTH), bad))
    daemon.start()
    try:
        await daemon.wait_ready()

        async def others_done() -> bool:
            events = await read_events(daemon.db)
            done = {e.call_id for e in events if e.type == "call.completed"}
            return done >= {s.call_id for s in scripts if s.call_id != bad}

        await wait_until(others_done, 60, "the other calls to complete", daemon)
        await wait_until(lambda: any(line.get("event") in SET_ASIDE
                                     for line in daemon.log_lines()), 20, "set aside", daemon)
        [logged] = [line for line in daemon.log_lines() if line.get("event") in SET_ASIDE]
        assert logged["level"] == "error" and logged["call_id"] == bad
        assert logged["provider"] == "envoy"
        assert await daemon.stop() == 0
        daemon.start()
        await daemon.wait_ready()
        await anyio.sleep(2.0)  # several poll rounds of a restarted daemon
        assert await daemon.stop() == 0
    finally:
        if daemon.proc is not None:
            await daemon.stop()
    assert (await counts_of(daemon.db)).get("set_aside") == 1
    # Not polled, so not set aside again, after the restart.
    assert sum(line.get("event") in SET_ASIDE for line in daemon.log_lines()) == 1
    shown = subprocess.run([sys.executable, "-m", "worker", "--config", str(config), "status",
                            "envoy", bad], capture_output=True, text=True, env={**env},
                           check=False)
    assert shown.returncode == 0, shown.stderr
    assert f"envoy {bad}: set_aside" in shown.stdout and "set aside" in shown.stdout


def run_daemon(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "worker", "--config", str(config), "run"],
                                stdout=out, stderr=out, env=env)


async def exits_within(proc: subprocess.Popen[bytes], seconds: float) -> int | None:
    deadline = time.monotonic() + seconds
    while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
        await anyio.sleep(0.05)
    return proc.poll()


async def test_a_corrupt_database_at_start_exits_non_zero_with_one_line(
        sim: Simulator, tmp_path: Path) -> None:
    """Garbage in the database file: the daemon exits 1 in seconds, naming the file."""
    config, env = write_config(tmp_path, sim, archive=False, webhook=False)
    db = tmp_path / "callwatch.db"
    db.write_bytes(b"this is not a database, " * 2000)
    log = tmp_path / "daemon.log"
    proc = run_daemon(config, dict(env), log)
    try:
        code = await exits_within(proc, 20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 1, log.read_text(errors="replace")
    errors = [line for line in log.read_text(errors="replace").splitlines()
              if line.startswith("callwatch:")]
    assert len(errors) == 1 and str(db) in errors[0], log.read_text(errors="replace")


async def test_sigterm_stops_a_daemon_whose_database_broke(sim: Simulator,
                                                           tmp_path: Path) -> None:
    """The database turns to garbage under a running daemon: SIGTERM still ends it."""
    config, env = write_config(tmp_path, sim, archive=False, webhook=False)
    daemon = DaemonUnderTest(config=config, env=env, workdir=tmp_path)
    daemon.start()
    try:
        await daemon.wait_ready()
        with daemon.db.open("r+b") as f:  # the same inode: the daemon's open file breaks
            f.write(b"\xff" * 8192)
        await anyio.sleep(0.5)
    finally:
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        code = await exits_within(daemon.proc, 30)
        if code is None:
            daemon.proc.kill()
            daemon.proc.wait()
    assert code is not None, daemon.log_tail()
    assert any(line.get("event") == "daemon.signal" for line in daemon.log_lines())
