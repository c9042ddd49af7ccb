"""Running under systemd: the notify protocol on a real socket, signals to a real subprocess."""

from __future__ import annotations

import itertools
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from tests.e2e.harness import DaemonUnderTest, read_events, wait_until
from worker.config import Config, load
from worker.demo import write_config
from worker.simulator import Fault, Simulator, World, run_simulator

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(World()) as running:
        yield running


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A real AF_UNIX datagram socket, as systemd creates for NOTIFY_SOCKET."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield sock, path
    sock.close()


class Messages:
    """Everything the daemon said on the notify socket, with arrival times."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received: list[tuple[float, dict[str, str]]] = []

    def drain(self) -> list[tuple[float, dict[str, str]]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.received
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.received.append((time.monotonic(), fields))

    def having(self, key: str) -> list[tuple[float, dict[str, str]]]:
        return [(t, m) for t, m in self.drain() if key in m]


def make_daemon(sim: Simulator, tmp_path: Path, env: dict[str, str] | None = None,
                extra: str = "") -> DaemonUnderTest:
    config, base_env = write_config(tmp_path, sim, archive=False, webhook=False, extra=extra)
    return DaemonUnderTest(config=config, env={**base_env, **(env or {})}, workdir=tmp_path)


async def test_notify_ready_status_watchdog_stopping(sim: Simulator, tmp_path: Path,
                                                    notify_socket: tuple[socket.socket, str]
                                                    ) -> None:
    """READY=1 with a STATUS, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 on SIGTERM."""
    sock, path = notify_socket
    messages = Messages(sock)
    daemon = make_daemon(sim, tmp_path, {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    daemon.start()
    try:
        await wait_until(lambda: messages.having("READY"), 15, "READY=1", daemon)
        ready = messages.having("READY")[0][1]
        assert ready["READY"] == "1"
        assert ready["STATUS"].startswith("tracking 0 calls")
        until = time.monotonic() + 2.6
        while time.monotonic() < until:  # read as they arrive, to time them
            messages.drain()
            await anyio.sleep(0.02)
        pings = [t for t, _ in messages.having("WATCHDOG")]
        assert len(pings) >= 4, pings  # ~every 0.5 s
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) < 0.9, gaps
    finally:
        assert await daemon.stop() == 0
    stopping = messages.having("STOPPING")
    assert stopping and stopping[0][1]["STOPPING"] == "1"


async def test_abstract_socket_and_no_socket_are_fine(sim: Simulator, tmp_path: Path) -> None:
    """An abstract NOTIFY_SOCKET (@name) receives messages; without one the daemon runs too."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"callwatch-test-{time.monotonic_ns()}"
    sock.bind("\0" + name)
    sock.setblocking(False)
    messages = Messages(sock)
    daemon = make_daemon(sim, tmp_path, {"NOTIFY_SOCKET": "@" + name})
    daemon.start()
    try:
        await wait_until(lambda: messages.having("READY"), 15, "READY=1", daemon)
    finally:
        assert await daemon.stop() == 0
        sock.close()


async def test_sighup_reload_good_and_bad(sim: Simulator, tmp_path: Path,
                                          notify_socket: tuple[socket.socket, str]) -> None:
    """SIGHUP re-reads the config: RELOADING=1 then READY=1, and logs what changed; a broken
    file keeps the old one and says so in STATUS= until a reload succeeds."""
    sock, path = notify_socket
    messages = Messages(sock)
    daemon = make_daemon(sim, tmp_path, {"NOTIFY_SOCKET": path})
    daemon.start()
    try:
        await daemon.wait_ready()
        good = daemon.config.read_text().replace("poll_interval = 0.5", "poll_interval = 0.7")
        daemon.config.write_text(good)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        await wait_until(lambda: _logged(daemon, "config.reloaded"), 10, "reloaded", daemon)
        assert messages.having("RELOADING")
        reloaded = next(line for line in daemon.log_lines()
                        if line.get("event") == "config.reloaded")
        assert reloaded["changed"] == [f"tracking.{kind}poll_interval"  # each one, replaced
                                       for kind in ("pending_", "", "recording_")]
        daemon.config.write_text(good + "\n[worker.oops]\nnot = \"valid\"\n")
        daemon.proc.send_signal(signal.SIGHUP)
        await wait_until(lambda: _logged(daemon, "config.reload_rejected"), 10, "rejected",
                         daemon)
        rejected = next(line for line in daemon.log_lines()
                        if line.get("event") == "config.reload_rejected")
        problems = rejected["problems"]
        assert isinstance(problems, list)
        assert any("worker.oops" in p for p in problems)
        assert rejected["level"] == "error"
        await wait_until(lambda: any("reload rejected: " in m.get("STATUS", "")
                                     and "worker.oops" in m["STATUS"]
                                     for _, m in messages.having("STATUS")),
                         10, "STATUS=reload rejected", daemon)
        # still working with the old config: a new call is polled and started
        script = sim.world.add_call("ultravox", starts_after=0, lasts=600)
        from tests.e2e.test_daemon import track_directly

        await track_directly(daemon.db, [script])  # the CLI would refuse the broken file
        await wait_until(lambda: _has(daemon.db, "call.started"), 10, "call.started", daemon)
        assert daemon.proc.poll() is None
    finally:
        assert await daemon.stop() == 0
    assert len([m for _, m in messages.having("READY")]) >= 3  # start + two reloads


def _logged(daemon: DaemonUnderTest, event: str) -> bool:
    return any(line.get("event") == event for line in daemon.log_lines())


async def _has(db: Path, kind: str) -> bool:
    return any(e.type == kind for e in await read_events(db))


async def test_sigterm_drains_in_flight_polls(sim: Simulator, tmp_path: Path) -> None:
    """SIGTERM waits for slow polls in flight, commits their results, exits 0."""
    daemon = make_daemon(sim, tmp_path)
    from tests.e2e.test_daemon import track

    scripts = [sim.world.add_call("envoy", starts_after=0, lasts=600) for _ in range(3)]
    for script in scripts:
        assert track(daemon, script).returncode == 0
    sim.faults["envoy"].add(Fault.SLOW, delay=2.0)
    daemon.start()
    await wait_until(lambda: sim.faults["envoy"].hits[Fault.SLOW] >= 3, 15, "slow polls", daemon)
    assert await daemon.stop() == 0
    drained = next(line for line in daemon.log_lines() if line.get("event") == "daemon.stopped")
    assert float(str(drained["drained_in"])) >= 1.0
    events = await read_events(daemon.db)
    assert sorted(e.call_id for e in events) == sorted(s.call_id for s in scripts)


async def test_second_signal_exits_at_once_without_damage(sim: Simulator, tmp_path: Path) -> None:
    """A second SIGTERM cuts the drain short; the exit is prompt and the database intact."""
    daemon = make_daemon(sim, tmp_path)
    from tests.e2e.test_daemon import track

    script = sim.world.add_call("envoy", starts_after=0, lasts=600)
    assert track(daemon, script).returncode == 0
    sim.faults["envoy"].add(Fault.SLOW, delay=12.0)
    daemon.start()
    await wait_until(lambda: sim.faults["envoy"].hits[Fault.SLOW] >= 1, 15, "slow poll", daemon)
    assert daemon.proc is not None
    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    await anyio.sleep(0.3)
    daemon.proc.send_signal(signal.SIGTERM)
    assert await daemon.stop() == 0
    assert time.monotonic() - started < 5.0
    assert _logged(daemon, "daemon.drain_cut_short")
    from worker.store.sqlite import SQLiteStore

    store = await SQLiteStore.open(daemon.db)
    try:
        assert await store.integrity_check() == "ok"
        call = await store.get_call("envoy", script.call_id)
        assert call is not None
        # the unfinished poll's lease was handed back: the next start polls it at once
        assert await store.claim_due_calls("envoy", time.time() + 1, 10) != []
    finally:
        await store.close()


def test_restart_needed_names_what_a_reload_cannot_change(tmp_path: Path) -> None:
    """A reload that changes the database, archive settings or connection limit says so."""
    from dataclasses import replace

    from worker.config_sections import ArchiveConfig, DeliveryConfig
    from worker.daemon import restart_needed

    base = _config(tmp_path)
    assert restart_needed(base, base) == []
    changed = replace(base, archive=ArchiveConfig(concurrency=9),
                      delivery=DeliveryConfig(max_connections=3),
                      worker=replace(base.worker, database=tmp_path / "other.db"))
    assert restart_needed(base, changed) == ["worker.database", "archive",
                                             "delivery.max_connections"]


def _config(tmp_path: Path) -> Config:
    path = tmp_path / "c.toml"
    path.write_text('[providers.apifycloud]\n')
    return load(path, environ={})
