"""Hostile provider replies against a real daemon subprocess (issue 16, "Provider replies").

Each attack runs beside ordinary calls of every provider, and asserts: the daemon stays up,
the ordinary calls still settle, the daemon's peak RSS (``VmHWM``) grows by far less than the
attack would cost unbounded, and ``/healthz`` keeps answering.

Event-loop lag: the daemon's ``callwatch_event_loop_lag_seconds`` gauge is read after the
attack and must be under 100 ms beyond the CPU wait the machine imposed (tests/e2e/looplag.py).
``/healthz`` is also probed from a thread during the attack, bounded at 1 s: a regression guard
against the seconds-long stalls the issue measured.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from tests.e2e.harness import DaemonUnderTest, read_events, wait_until
from tests.e2e.looplag import Control, assert_loop_lag_low
from tests.e2e.test_api import free_port
from worker.demo import write_config
from worker.reconcile import TOO_MANY_RECORDINGS
from worker.simulator import Fault, RecordingScript, Simulator, World, run_simulator
from worker.simulator.world import CallScript

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

TRACKING = {"poll_interval": 0.3, "pending_poll_interval": 0.3, "recording_poll_interval": 0.3,
            "recording_grace": 30, "not_found_grace": 30, "max_tracking_age": 300}
MIB = 1024 * 1024
HEALTHZ_BOUND = 1.0  # seconds; see the module docstring


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(World()) as running:
        yield running


def hostile_daemon(sim: Simulator, tmp_path: Path, port: int) -> DaemonUnderTest:
    extra = f'\n[api]\nlisten = "127.0.0.1:{port}"\ntoken_env = "CW_API_TOKEN"\n'
    config, env = write_config(tmp_path, sim, archive=False, webhook=False, tracking=TRACKING,
                               extra=extra)
    return DaemonUnderTest(config=config, env={**env, "CW_API_TOKEN": "hostile-e2e-token"},
                           workdir=tmp_path)


def ordinary_calls(sim: Simulator) -> list[CallScript]:
    return [sim.world.add_call(provider, starts_after=0.2, lasts=0.5 + i * 0.3,
                               recordings=[RecordingScript(ready_after=0.3, size=4096)])
            for i, provider in enumerate(("ultravox", "envoy", "apifycloud") * 2)]


def peak_rss(pid: int) -> int:
    """The process's peak resident set (``VmHWM``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


@contextmanager
def healthz_probe(port: int) -> Iterator[list[float]]:
    """Probe /healthz every 50 ms from a thread; yield the list of answer times (seconds)."""
    times: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            while not stop.is_set():
                began = time.perf_counter()
                try:
                    status = client.get("/healthz").status_code
                except httpx.HTTPError:  # no answer within 10 s counts as never
                    status = 0
                times.append(time.perf_counter() - began if status == 200 else float("inf"))
                stop.wait(0.05)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        yield times
    finally:
        stop.set()
        thread.join(15)


async def track(daemon: DaemonUnderTest, port: int, scripts: list[CallScript]) -> None:
    headers = {"Authorization": f"Bearer {daemon.env['CW_API_TOKEN']}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers,
                                 timeout=10) as api:
        for script in scripts:
            reply = await api.post("/v1/calls", json={"provider": script.provider,
                                                      "call_id": script.call_id})
            assert reply.status_code == 201, reply.text


async def terminal_types(db: Path, scripts: list[CallScript]) -> dict[str, list[str]]:
    wanted = {s.call_id for s in scripts}
    out: dict[str, list[str]] = {s.call_id: [] for s in scripts}
    for event in await read_events(db):
        if event.call_id in wanted:
            out[event.call_id].append(event.type)
    return out


async def all_completed(db: Path, scripts: list[CallScript]) -> bool:
    types = await terminal_types(db, scripts)
    return all(t and t[-1] == "call.completed" for t in types.values())


async def test_gzip_bombs_and_a_recording_flood_do_not_hurt_the_daemon(
        sim: Simulator, tmp_path: Path) -> None:
    """Four 256 MiB gzip bombs and a 15,000-recording reply: up, bounded, others settle,
    event-loop lag under 100 ms (see tests/e2e/looplag.py for how load is told apart)."""
    port = free_port()
    daemon = hostile_daemon(sim, tmp_path, port)
    daemon.start()
    assert daemon.proc is not None
    stalls = Control(daemon.proc.pid)
    try:
        await daemon.wait_ready()
        assert daemon.proc is not None
        await wait_until(lambda: _healthz_ok(port), 10, "/healthz", daemon)
        baseline = peak_rss(daemon.proc.pid)

        bombs = [sim.world.add_call("apifycloud", starts_after=0, lasts=None) for _ in range(4)]
        flood = sim.world.add_call("apifycloud", starts_after=0, lasts=0.2)
        for bomb in bombs:
            sim.faults["apifycloud"].add(Fault.GZIP_BOMB, match=bomb.call_id)
        sim.faults["apifycloud"].add(Fault.MANY_RECORDINGS, match=flood.call_id, listed=15_000)
        ordinary = ordinary_calls(sim)

        with healthz_probe(port) as answers:
            await track(daemon, port, [*bombs, flood, *ordinary])
            await wait_until(lambda: all_completed(daemon.db, ordinary), 60,
                             "the ordinary calls to complete", daemon)
            await wait_until(lambda: sim.faults["apifycloud"].hits[Fault.GZIP_BOMB] >= 12, 60,
                             "three bomb polls per bomb call", daemon)
            await wait_until(lambda: _flood_settled(daemon.db, flood), 30,
                             "the flooded call to settle", daemon)
        await anyio.sleep(0.2)

        assert daemon.proc.poll() is None, daemon.log_tail()
        growth = peak_rss(daemon.proc.pid) - baseline
        # Unbounded inflation costs about 64 MiB per bomb poll in flight; bounded, 2 MiB.
        assert growth < 40 * MIB, f"peak RSS grew {growth / MIB:.1f} MiB"
        assert answers, "no /healthz answer at all"
        assert max(answers) < HEALTHZ_BOUND, f"slowest /healthz: {max(answers):.3f} s"
        assert_loop_lag_low(port, daemon.env["CW_API_TOKEN"], stalls)

        types = (await terminal_types(daemon.db, [flood]))[flood.call_id]
        assert len(types) <= 3 and types[-1] == "call.tracking_failed", types
        reason = _reason(await read_events(daemon.db), flood)
        assert reason.startswith(TOO_MANY_RECORDINGS), reason
        bomb_events = await terminal_types(daemon.db, bombs)
        assert all(not t for t in bomb_events.values()), bomb_events  # failed polls, no events
        events = [line["event"] for line in daemon.log_lines()]
        assert "provider.unparseable" in events
        assert "provider.too_many_recordings" in events
    finally:
        stalls.stop()
        await daemon.stop()


def _healthz_ok(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


async def _flood_settled(db: Path, flood: CallScript) -> bool:
    types = (await terminal_types(db, [flood]))[flood.call_id]
    return bool(types) and types[-1] in ("call.tracking_failed", "call.completed")


def _reason(events: list, flood: CallScript) -> str:  # type: ignore[type-arg]
    last = [e for e in events if e.call_id == flood.call_id][-1]
    reason: str = json.loads(last.body)["data"].get("reason", "")
    return reason
