"""Webhook delivery end to end: the daemon as a subprocess, the simulator's receiver on loopback.

Most tests write events straight into the daemon's outbox (as the scheduler would) so that
each pins one receiver behaviour in a few seconds; the first and the kill -9 test run real
calls through the simulated providers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from standardwebhooks import Webhook

from tests.e2e.harness import DaemonUnderTest, read_events, wait_until
from tests.webhooks.schema import check_body
from tests.webhooks.support import at, emit, to
from worker.demo import write_config
from worker.model import EventType
from worker.simulator import ReceivedRequest, Simulator, World, run_simulator
from worker.simulator.world import RecordingScript
from worker.store.base import StoredEvent
from worker.store.sqlite import SQLiteStore
from worker.webhooks.base import DeliveryState

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

# The daemon polls the made-up calls of these tests rarely and never gives up on them.
QUIET = {"poll_interval": 300, "pending_poll_interval": 300, "recording_poll_interval": 300,
         "recording_grace": 3600, "not_found_grace": 3600, "max_tracking_age": 86400}
FAST = {"poll_interval": 0.3, "pending_poll_interval": 0.3, "recording_poll_interval": 0.3,
        "recording_grace": 8, "not_found_grace": 5, "max_tracking_age": 120}
TWO = (EventType.CALL_STARTED, EventType.CALL_ENDED)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(World()) as running:
        yield running


def toml_table(values: Mapping[str, Any]) -> str:
    lines = ["", "[[webhooks]]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def daemon_with(sim: Simulator, tmp_path: Path, hooks: Sequence[Mapping[str, Any]],
                tracking: Mapping[str, float] = QUIET) -> DaemonUnderTest:
    """A daemon whose [[webhooks]] point at paths of the receiver (fast retries by default)."""
    tables = "".join(toml_table({"url": at(sim, path), "secret_env": "SIM_WEBHOOK_SECRET",
                                 "retry_schedule": [0.3, 0.5, 1], "timeout": 2, **keys})
                     for path, keys in ((h["path"], {k: v for k, v in h.items() if k != "path"})
                                        for h in hooks))
    # The receiver is on loopback: per-call URLs may go there in these tests.
    config, env = write_config(tmp_path, sim, archive=False, webhook=False, tracking=tracking,
                               extra=tables + "\n[call_webhooks]\nallow_private = true\n")
    return DaemonUnderTest(config=config, env=env, workdir=tmp_path)


async def started(daemon: DaemonUnderTest) -> DaemonUnderTest:
    daemon.start()
    await daemon.wait_ready()
    return daemon


async def write_events(daemon: DaemonUnderTest, call_id: str,
                       types: Sequence[EventType] = TWO) -> list[str]:
    """Events straight into the running daemon's outbox, as another writer would."""
    store = await SQLiteStore.open(daemon.db)
    try:
        return await emit(store, call_id, types, now=time.time())
    finally:
        await store.close()


async def delivery_states(daemon: DaemonUnderTest) -> dict[tuple[str, str], DeliveryState]:
    store = await SQLiteStore.open(daemon.db)
    try:
        rows = await store.list_deliveries(limit=10_000)
    finally:
        await store.close()
    return {(r.event_id, r.endpoint): r.state for r in rows}


async def all_delivered(daemon: DaemonUnderTest, n: int) -> bool:
    found = await delivery_states(daemon)
    return len(found) >= n and set(found.values()) == {DeliveryState.DELIVERED}


def cli(daemon: DaemonUnderTest, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker", "--config", str(daemon.config),
                           *args], capture_output=True, text=True, env={**daemon.env},
                          check=False)


def verify(daemon: DaemonUnderTest, request: ReceivedRequest) -> None:
    Webhook(daemon.env["SIM_WEBHOOK_SECRET"]).verify(request.body, dict(request.headers))


def by_call(requests: Sequence[ReceivedRequest]) -> dict[str, list[str | None]]:
    """Each call's webhook-ids in the order they first arrived (retries not repeated).

    A request whose sender went away mid-body (a worker SIGKILLed while sending: the sink
    records it as 499) never reached a consumer whole, so it has no place in that order.
    """
    first: dict[str, list[str | None]] = defaultdict(list)
    for request in requests:
        if request.status == 499:
            continue
        call_id, msg_id = request.json()["data"]["call_id"], request.header("webhook-id")
        if msg_id not in first[call_id]:
            first[call_id].append(msg_id)
    return dict(first)


def by_call_events(events: Sequence[StoredEvent]) -> dict[str, list[str | None]]:
    """Each call's event ids in outbox order."""
    expected: dict[str, list[str | None]] = defaultdict(list)
    for event in events:
        expected[event.call_id].append(event.id)
    return dict(expected)


def logged(daemon: DaemonUnderTest, event: str) -> list[dict[str, object]]:
    return [line for line in daemon.log_lines() if line.get("event") == event]


async def test_every_event_of_real_calls_reaches_the_receiver_signed_in_order(
        sim: Simulator, tmp_path: Path) -> None:
    """Real calls: every outbox event arrives, verifiable, schema-valid, in order per call;
    a call's --webhook URL gets that call's events too."""
    scripts = [sim.world.add_call(p, starts_after=0.2, lasts=1.0,
                                  recordings=[RecordingScript(ready_after=0.3, size=2048)])
               for p in ("ultravox", "envoy", "apifycloud")]
    daemon = daemon_with(sim, tmp_path, [{"path": "all"}], tracking=FAST)
    for n, script in enumerate(scripts):
        extra = ["--webhook", at(sim, "mine")] if n == 0 else []
        result = cli(daemon, "track", script.provider, script.call_id, *extra)
        assert result.returncode == 0, result.stderr
    await started(daemon)
    try:
        await wait_until(lambda: _terminal(daemon, len(scripts)), 30, "calls settled", daemon)
        events = await read_events(daemon.db)
        mine = [e for e in events if e.call_id == scripts[0].call_id]
        await sim.sink.wait_for(lambda r: len(to(r, "all")) >= len(events)
                                and len(to(r, "mine")) >= len(mine), timeout=10)
        status = cli(daemon, "status", scripts[0].provider, scripts[0].call_id, "--json")
    finally:
        assert await daemon.stop() == 0
    assert by_call(to(sim.sink.requests, "all")) == by_call_events(events)
    assert [r.header("webhook-id") for r in to(sim.sink.requests, "mine")] == [e.id for e in mine]
    stored = {e.id: e.body for e in events}
    for request in sim.sink.requests:
        verify(daemon, request)
        assert request.body == stored[request.header("webhook-id") or ""]
        check_body(request.body)
    detail = json.loads(status.stdout)
    assert {(d["endpoint"], d["state"]) for d in detail["deliveries"]} == {
        (at(sim, "all"), "delivered"), (at(sim, "mine"), "delivered")}


async def _terminal(daemon: DaemonUnderTest, n: int) -> bool:
    if not daemon.db.exists():
        return False
    done = [e for e in await read_events(daemon.db)
            if e.type in ("call.completed", "call.tracking_failed")]
    return len(done) >= n


async def test_failing_receiver_gets_the_same_id_with_later_timestamps(
        sim: Simulator, tmp_path: Path) -> None:
    """Two 500s, then 200: three attempts of one webhook-id, each with a later timestamp."""
    sim.sink.behave("/hooks/flaky", fail_next=2)
    daemon = await started(daemon_with(sim, tmp_path, [{"path": "flaky",
                                                        "retry_schedule": [1.2, 1.2, 5]}]))
    try:
        (only,) = await write_events(daemon, "call_1", [EventType.CALL_STARTED])
        received = await sim.sink.wait_for(lambda r: len(r) == 3, timeout=10)
    finally:
        assert await daemon.stop() == 0
    assert [r.status for r in received] == [500, 500, 200]
    assert {r.header("webhook-id") for r in received} == {only}
    stamps = [int(r.header("webhook-timestamp") or 0) for r in received]
    assert stamps[0] < stamps[1] < stamps[2]
    for request in received:
        verify(daemon, request)
    assert len(logged(daemon, "delivery.failed")) == 2


async def test_receiver_slower_than_the_timeout_is_retried(sim: Simulator,
                                                           tmp_path: Path) -> None:
    """No answer within `timeout` is a failure after `timeout`; the retry then succeeds."""
    sim.sink.behave("/hooks/slow", delay=30)
    daemon = await started(daemon_with(sim, tmp_path, [{"path": "slow", "timeout": 0.5}]))
    try:
        ids = await write_events(daemon, "call_1")
        await wait_until(lambda: logged(daemon, "delivery.failed"), 10, "a timeout", daemon)
        sim.sink.behave("/hooks/slow", delay=0)
        await wait_until(lambda: all_delivered(daemon, 2), 10, "delivered", daemon)
    finally:
        assert await daemon.stop() == 0
    (failure, *_) = logged(daemon, "delivery.failed")
    assert failure["reason"] == "no answer within 0.5 s"
    firsts = list(dict.fromkeys(r.header("webhook-id") for r in sim.sink.requests))
    assert firsts == ids


async def test_gone_disables_the_endpoint_until_a_replay(sim: Simulator, tmp_path: Path) -> None:
    """410 disables that endpoint (status says so, loudly logged), others get everything;
    `callwatch replay --dead` re-enables it and sends what waited, in order."""
    sim.sink.behave("/hooks/gone", status=410)
    daemon = await started(daemon_with(sim, tmp_path, [{"path": "gone"}, {"path": "ok"}]))
    try:
        ids = await write_events(daemon, "call_1")
        await sim.sink.wait_for(lambda r: len(to(r, "ok")) == 2, timeout=10)
        await anyio.sleep(0.5)  # long enough for retries, were there any
        assert len(to(sim.sink.requests, "gone")) == 1
        overview = cli(daemon, "status")
        failed = cli(daemon, "deliveries", "--failed")
        sim.sink.behave("/hooks/gone", status=200)
        replay = cli(daemon, "replay", "--dead")
        await sim.sink.wait_for(lambda r: len(to(r, "gone")) == 3, timeout=10)
    finally:
        assert await daemon.stop() == 0
    assert f"endpoint {at(sim, 'gone')} is disabled" in overview.stdout
    assert failed.stdout.count("disabled") == 2
    assert replay.returncode == 0 and "re-enabled endpoint" in replay.stdout
    assert [r.header("webhook-id") for r in to(sim.sink.requests, "gone")] == [ids[0], *ids]
    (disabled,) = logged(daemon, "endpoint.disabled")
    assert disabled["level"] == "error"


async def test_retry_after_is_honoured(sim: Simulator, tmp_path: Path) -> None:
    """429 with Retry-After: 1 is not retried for 1 s, though the schedule says 0.3 s."""
    sim.sink.behave(status=429, retry_after=1)
    daemon = await started(daemon_with(sim, tmp_path, [{"path": "busy"}]))
    try:
        await write_events(daemon, "call_1", [EventType.CALL_STARTED])
        await sim.sink.wait_for(lambda r: len(r) == 1, timeout=10)
        sim.sink.behave(status=200)
        first, second = await sim.sink.wait_for(lambda r: len(r) == 2, timeout=10)
    finally:
        assert await daemon.stop() == 0
    assert second.received_at - first.received_at >= 0.95


async def test_receiver_down_then_up_loses_nothing(sim: Simulator, tmp_path: Path) -> None:
    """Connection refused while the receiver is down; everything arrives once it is up."""
    await sim.sink_down()
    daemon = await started(daemon_with(sim, tmp_path, [{"path": "a",
                                                        "retry_schedule": [0.3] * 20}]))
    try:
        ids = await write_events(daemon, "call_1")
        await wait_until(lambda: logged(daemon, "delivery.failed"), 10, "refusals", daemon)
        await sim.sink_up()
        received = await sim.sink.wait_for(lambda r: len(r) == 2, timeout=10)
    finally:
        assert await daemon.stop() == 0
    assert [r.header("webhook-id") for r in received] == ids
    assert str(logged(daemon, "delivery.failed")[0]["reason"]).startswith("ConnectError")


async def test_redirect_counts_as_failure_and_is_not_followed(sim: Simulator,
                                                              tmp_path: Path) -> None:
    """307 to another URL: a failed attempt; the other URL never hears from us."""
    sim.sink.behave("/hooks/moved", status=307, location=at(sim, "target"))
    daemon = await started(daemon_with(sim, tmp_path, [{"path": "moved",
                                                        "retry_schedule": [30]}]))
    try:
        await write_events(daemon, "call_1", [EventType.CALL_STARTED])
        await wait_until(lambda: logged(daemon, "delivery.failed"), 10, "a failure", daemon)
        listed = cli(daemon, "deliveries", "--failed", "--json")
    finally:
        assert await daemon.stop() == 0
    (row,) = json.loads(listed.stdout)
    assert (row["last_status"], row["state"]) == (307, "pending")
    assert to(sim.sink.requests, "target") == []


async def test_huge_and_endless_replies_cost_little_and_lose_nothing(
        sim: Simulator, tmp_path: Path) -> None:
    """A 50 MB reply and a reply that never ends: both delivered within their timeout, and
    the daemon never holds the 50 MB."""
    sim.sink.behave("/hooks/huge", huge_reply=50 * 2**20)
    sim.sink.behave("/hooks/endless", stall=True)
    daemon = await started(daemon_with(sim, tmp_path, [{"path": "huge", "timeout": 5},
                                                       {"path": "endless", "timeout": 1}]))
    try:
        ids = await write_events(daemon, "call_1")
        begun = time.monotonic()
        await wait_until(lambda: all_delivered(daemon, 4), 10, "delivered", daemon)
        elapsed = time.monotonic() - begun
        assert daemon.proc is not None
        peak_kib = _peak_rss_kib(daemon.proc.pid)
    finally:
        assert await daemon.stop() == 0
    assert elapsed < 5.0
    # The daemon peaks near 45 MiB; buffering the 50 MB reply would take it past 95.
    assert peak_kib < 80 * 1024, f"daemon peak RSS {peak_kib / 1024:.0f} MiB"
    for path in ("huge", "endless"):
        assert [r.header("webhook-id") for r in to(sim.sink.requests, path)] == ids


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc")


async def test_kill_9_mid_delivery_loses_nothing_and_keeps_order(sim: Simulator,
                                                                 tmp_path: Path) -> None:
    """kill -9 with attempts in flight and retries pending, twice: after restart every event
    arrives, with its one webhook-id, first arrivals in order per call."""
    scripts = [sim.world.add_call(p, starts_after=0.2, lasts=1.0 + 0.3 * n,
                                  recordings=[RecordingScript(ready_after=0.3, size=2048)])
               for n in range(3) for p in ("ultravox", "envoy", "apifycloud")]
    # A slow receiver and few slots: about 5 s of delivering, so both kills land mid-way.
    daemon = daemon_with(sim, tmp_path, [{"path": "a", "retry_schedule": [0.5] * 10,
                                          "max_in_flight": 4}], tracking=FAST)
    for script in scripts:
        assert cli(daemon, "track", script.provider, script.call_id).returncode == 0
    sim.sink.behave(delay=0.4, fail_next=6)
    await started(daemon)
    try:
        for _ in range(2):
            await wait_until(lambda: _in_flight_and_retrying(daemon), 20, "busy", daemon)
            daemon.kill()
            sim.sink.behave(fail_next=6)  # the next life meets failures too
            await started(daemon)
        await wait_until(lambda: _terminal(daemon, len(scripts)), 40, "calls settled", daemon)
        events = await read_events(daemon.db)
        ok = {e.id for e in events}
        await sim.sink.wait_for(lambda r: ok <= {x.header("webhook-id") for x in r
                                                 if x.status == 200}, timeout=20)
    finally:
        assert await daemon.stop() == 0
    assert daemon.exit_codes[:2] == [-9, -9]
    assert by_call(sim.sink.requests) == by_call_events(events)


async def _in_flight_and_retrying(daemon: DaemonUnderTest) -> bool:
    """True while the daemon holds attempts in flight and has failed ones waiting to retry."""
    if not daemon.db.exists():
        return False
    store = await SQLiteStore.open(daemon.db)
    try:
        rows = await store.list_deliveries(limit=10_000)
    finally:
        await store.close()
    flying = any(r.in_flight for r in rows)
    retrying = any(r.state == DeliveryState.PENDING and r.attempts > 0 and not r.in_flight
                   for r in rows)
    return flying and retrying
