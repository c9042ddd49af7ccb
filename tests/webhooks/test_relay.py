"""The relay in this process against the simulator's receiver, over real loopback HTTP."""

from __future__ import annotations

import time
import tracemalloc
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from tests.components import started
from tests.e2e.harness import wait_until
from tests.webhooks.support import SECRET, SECRET_2, at, emit, hook, make_config, to, verify
from worker.config import Config
from worker.model import EventType
from worker.simulator import Simulator, World, run_simulator
from worker.store.errors import TransientStoreError
from worker.store.sqlite import SQLiteStore
from worker.webhooks.base import DeliveryState, ListFilter
from worker.webhooks.endpoints import UNCONFIGURED
from worker.webhooks.relay import Relay

pytestmark = pytest.mark.anyio


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(World()) as running:
        yield running


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = await SQLiteStore.open(tmp_path / "callwatch.db")
    yield opened
    await opened.close()


@asynccontextmanager
async def running(config: Config, store: SQLiteStore) -> AsyncIterator[Relay]:
    """The relay as the daemon runs it, stopped (draining) when the block ends."""
    async with started(Relay(config, store, idle_wait=0.2)) as relay:
        yield relay


async def send(store: SQLiteStore, relay: Relay, call_id: str,
               types: Sequence[EventType] = (EventType.CALL_STARTED,), **kw: Any) -> list[str]:
    ids = await emit(store, call_id, types, now=time.time(), **kw)
    relay.wake()
    return ids


async def states(store: SQLiteStore) -> dict[str, DeliveryState]:
    return {f"{r.call_id} {r.event_type} {r.endpoint}": r.state
            for r in await store.list_deliveries(limit=1000)}


async def all_delivered(store: SQLiteStore) -> bool:
    found = await states(store)
    return bool(found) and set(found.values()) == {DeliveryState.DELIVERED}


async def test_delivers_the_exact_stored_bytes_signed_with_every_secret(
        sim: Simulator, store: SQLiteStore, tmp_path: Path) -> None:
    """Each event arrives once with its stored body; both rotation secrets verify it."""
    both = hook(at(sim, "a"), secret_env="BOTH_SECRETS")  # noqa: S106 - a variable's name
    config = make_config(tmp_path, [both])
    async with running(config, store) as relay:
        ids = await send(store, relay, "call_1", [EventType.CALL_STARTED, EventType.CALL_ENDED])
        received = await sim.sink.wait_for(lambda r: len(r) == 2)
    stored = {e.id: e.body for e in await store.call_events("envoy", "call_1")}
    assert [r.header("webhook-id") for r in received] == ids
    for request in received:
        assert request.body == stored[request.header("webhook-id") or ""]
        assert request.header("content-type") == "application/json"
        assert verify(request, SECRET) == verify(request, SECRET_2) == request.json()


async def test_fails_first_attempts_then_succeeds_with_the_same_id(
        sim: Simulator, store: SQLiteStore, tmp_path: Path) -> None:
    """Two 500s then 200: three attempts, one webhook-id, timestamps that never go back."""
    sim.sink.behave(fail_next=2)
    config = make_config(tmp_path, [hook(at(sim, "a"), retry_schedule=[0.1, 0.1, 5])])
    async with running(config, store) as relay:
        (only,) = await send(store, relay, "call_1")
        received = await sim.sink.wait_for(lambda r: len(r) == 3, timeout=5)
        await wait_until(lambda: all_delivered(store), 5, "recorded as delivered")
    assert [r.status for r in received] == [500, 500, 200]
    assert {r.header("webhook-id") for r in received} == {only}
    stamps = [int(r.header("webhook-timestamp") or 0) for r in received]
    assert stamps == sorted(stamps) and abs(stamps[0] - time.time()) < 30
    for request in received:
        verify(request)
    (row,) = await store.list_deliveries()
    assert (row.attempts, row.last_status) == (3, 200)


async def test_slow_reply_past_the_timeout_fails_and_is_retried(
        sim: Simulator, store: SQLiteStore, tmp_path: Path) -> None:
    """A receiver slower than `timeout` counts as a failure after `timeout`, then a retry."""
    sim.sink.behave("/hooks/slow", delay=30)
    config = make_config(tmp_path, [hook(at(sim, "slow"), timeout=0.3,
                                         retry_schedule=[0.3, 5])])
    async with running(config, store) as relay:
        await send(store, relay, "call_1")
        await sim.sink.wait_for(lambda r: len(r) == 1)
        started = time.monotonic()
        await wait_until(lambda: _failed_once(store), 3, "the attempt to time out")
        assert time.monotonic() - started < 1.0
        sim.sink.behave("/hooks/slow", delay=0)
        await wait_until(lambda: all_delivered(store), 5, "the retry to succeed")
    (row,) = await store.list_deliveries()
    assert row.attempts == 2


async def _failed_once(store: SQLiteStore) -> bool:
    rows = await store.list_deliveries(only=ListFilter.FAILED)
    return bool(rows) and rows[0].last_error == "no answer within 0.3 s"


async def test_gone_disables_the_endpoint_and_spares_the_others(
        sim: Simulator, store: SQLiteStore, tmp_path: Path) -> None:
    """410: that endpoint gets nothing more (no retries), the others get everything."""
    sim.sink.behave("/hooks/gone", status=410)
    config = make_config(tmp_path, [hook(at(sim, "gone")), hook(at(sim, "ok"))])
    async with running(config, store) as relay:
        for call in ("call_1", "call_2"):
            await send(store, relay, call, [EventType.CALL_STARTED, EventType.CALL_ENDED])
        await sim.sink.wait_for(lambda r: len(to(r, "ok")) == 4)
        await anyio.sleep(0.5)  # retries would be due by now
        gone = to(sim.sink.requests, "gone")
        counts = await store.delivery_counts()
        assert counts.disabled == 4  # the answered ones too: a replay sends them again
        assert [e.url for e in counts.disabled_endpoints] == [at(sim, "gone")]
        sim.sink.behave("/hooks/gone", status=200)
        replayed = await store.replay(time.time(), dead=True)
        relay.wake()
        assert replayed.enabled == (at(sim, "gone"),)
        await wait_until(lambda: all_delivered(store), 5, "delivery after the replay")
    assert 1 <= len(gone) <= 2  # the first answer of each call in flight at once, never a retry


async def test_throttled_with_retry_after_waits_that_long(
        sim: Simulator, store: SQLiteStore, tmp_path: Path) -> None:
    """429 + Retry-After: 1 is not retried sooner, although the schedule says 0.05 s."""
    sim.sink.behave(status=429, retry_after=1)
    config = make_config(tmp_path, [hook(at(sim, "a"), retry_schedule=[0.05, 0.05])])
    async with running(config, store) as relay:
        await send(store, relay, "call_1")
        await sim.sink.wait_for(lambda r: len(r) == 1)
        sim.sink.behave(status=200)
        first, second = await sim.sink.wait_for(lambda r: len(r) == 2, timeout=5)
    assert second.received_at - first.received_at >= 0.95


async def test_receiver_down_then_up_gets_everything(
        sim: Simulator, store: SQLiteStore, tmp_path: Path) -> None:
    """Connection refused is retried; once the receiver listens again all events arrive."""
    await sim.sink_down()
    config = make_config(tmp_path, [hook(at(sim, "a"), retry_schedule=[0.1] * 30)])
    async with running(config, store) as relay:
        ids = await send(store, relay, "call_1", [EventType.CALL_STARTED, EventType.CALL_ENDED])
        await wait_until(lambda: _refused(store), 5, "a refused attempt")
        await sim.sink_up()
        received = await sim.sink.wait_for(lambda r: len(r) == 2, timeout=5)
    assert [r.header("webhook-id") for r in received] == ids


async def _refused(store: SQLiteStore) -> bool:
    rows = await store.list_deliveries(only=ListFilter.FAILED)
    return any((r.last_error or "").startswith("ConnectError") for r in rows)


async def test_redirect_is_a_failure_and_is_not_followed(
        sim: Simulator, store: SQLiteStore, tmp_path: Path) -> None:
    """307 with a Location is a failed attempt; nothing is sent where it points."""
    sim.sink.behave("/hooks/moved", status=307, location=at(sim, "target"))
    config = make_config(tmp_path, [hook(at(sim, "moved"), retry_schedule=[5])])
    async with running(config, store) as relay:
        await send(store, relay, "call_1")
        await wait_until(lambda: store.list_deliveries(only=ListFilter.FAILED), 5, "a failure")
    (row,) = await store.list_deliveries()
    assert (row.state, row.last_status) == (DeliveryState.PENDING, 307)
    assert row.last_error == "HTTP 307 (redirects are not followed)"
    assert to(sim.sink.requests, "target") == []


async def test_huge_reply_costs_neither_time_nor_memory(
        sim: Simulator, store: SQLiteStore, tmp_path: Path) -> None:
    """A 2xx with a 50 MB body is delivered promptly, reading only its first 4 KiB."""
    sim.sink.behave(huge_reply=50 * 2**20)
    config = make_config(tmp_path, [hook(at(sim, "a"), timeout=5)])
    tracemalloc.start()
    try:
        async with running(config, store) as relay:
            started = time.monotonic()
            await send(store, relay, "call_1", [EventType.CALL_STARTED, EventType.CALL_ENDED])
            await wait_until(lambda: all_delivered(store), 5, "delivered despite the huge reply")
            elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 3.0
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    replies = await _replies(store)
    assert replies and all(0 < len(r) <= 4096 for r in replies)


async def _replies(store: SQLiteStore) -> list[bytes]:
    rows = await store.db.fetchall("SELECT reply FROM delivery_attempts")
    return [bytes(r[0]) for r in rows]


async def test_reply_that_never_finishes_is_cut_at_the_timeout(
        sim: Simulator, store: SQLiteStore, tmp_path: Path) -> None:
    """A 200 whose body never ends counts as delivered (the status came in time), in
    `timeout`; a request never answered at all fails after `timeout` and is retried."""
    sim.sink.behave("/hooks/stall", stall=True)
    sim.sink.behave("/hooks/mute", delay=3600)
    config = make_config(tmp_path, [hook(at(sim, "stall"), timeout=0.5),
                                    hook(at(sim, "mute"), timeout=0.5, retry_schedule=[0.1] * 5)])
    async with running(config, store) as relay:
        await send(store, relay, "call_1")
        await wait_until(lambda: _stall_delivered(store, at(sim, "stall")), 3, "stall cut off")
        await sim.sink.wait_for(lambda r: len(to(r, "mute")) >= 2, timeout=5)
    rows = await store.db.fetchall("SELECT status_code, latency, error FROM delivery_attempts")
    assert all(latency < 1.5 for _, latency, _ in rows)
    assert (200, None) in {(status, error) for status, _, error in rows}
    assert (None, "no answer within 0.5 s") in {(status, error) for status, _, error in rows}


async def _stall_delivered(store: SQLiteStore, url: str) -> bool:
    rows = await store.list_deliveries(endpoint=url)
    return bool(rows) and rows[0].state == DeliveryState.DELIVERED


async def test_a_slow_consumer_of_one_call_does_not_delay_another_call(
        sim: Simulator, store: SQLiteStore, tmp_path: Path) -> None:
    """Call A's --webhook answers in 0.6 s; call B's events all arrive before A's second."""
    sim.sink.behave("/hooks/slow", delay=0.6)
    config = make_config(tmp_path, [hook(at(sim, "none"), events=["call.tracking_failed"],
                                         timeout=5)])
    three = [EventType.CALL_STARTED, EventType.CALL_ENDED, EventType.CALL_COMPLETED]
    async with running(config, store) as relay:
        await send(store, relay, "call_a", three, webhook=at(sim, "slow"))
        await send(store, relay, "call_b", three, webhook=at(sim, "fast"))
        received = await sim.sink.wait_for(lambda r: len(to(r, "fast")) == 3)
        assert len(to(received, "slow")) == 1
        await sim.sink.wait_for(lambda r: len(to(r, "slow")) == 3, timeout=5)
    for request in to(sim.sink.requests, "slow") + to(sim.sink.requests, "fast"):
        verify(request)  # a --webhook URL is signed with the first configured secret


async def test_per_call_urls_are_signed_with_the_call_webhooks_secret(
        sim: Simulator, store: SQLiteStore, tmp_path: Path) -> None:
    """With [call_webhooks] secret set, a --webhook receiver gets signatures made with it,
    never with the configured endpoint's secret (so it cannot forge events to that one)."""
    config = make_config(tmp_path, [hook(at(sim, "all"))],
                         call_webhooks={"allow_private": True, "secret_env": "CALL_SECRET"})
    async with running(config, store) as relay:
        await send(store, relay, "call_a", [EventType.CALL_STARTED], webhook=at(sim, "mine"))
        await sim.sink.wait_for(lambda r: len(to(r, "mine")) == 1 and len(to(r, "all")) == 1)
    (mine,) = to(sim.sink.requests, "mine")
    (configured,) = to(sim.sink.requests, "all")
    verify(mine, SECRET_2)
    verify(configured, SECRET)
    with pytest.raises(WebhookVerificationError):
        verify(mine, SECRET)


async def test_a_dead_endpoint_does_not_delay_another_endpoint(
        sim: Simulator, store: SQLiteStore, tmp_path: Path) -> None:
    """While one endpoint fails every attempt, the other gets every event at once, in order."""
    sim.sink.behave("/hooks/down", status=500)
    config = make_config(tmp_path, [hook(at(sim, "down"), retry_schedule=[0.1] * 50),
                                    hook(at(sim, "up"))])
    async with running(config, store) as relay:
        started = time.monotonic()
        ids = await send(store, relay, "call_1", [EventType.CALL_STARTED, EventType.CALL_ENDED,
                                                  EventType.CALL_COMPLETED])
        received = await sim.sink.wait_for(lambda r: len(to(r, "up")) == 3)
        assert time.monotonic() - started < 2.0
    assert [r.header("webhook-id") for r in to(received, "up")] == ids
    assert {r.header("webhook-id") for r in to(sim.sink.requests, "down")} == {ids[0]}


async def test_order_per_call_holds_under_concurrency(
        sim: Simulator, store: SQLiteStore, tmp_path: Path) -> None:
    """Many calls at once through a few slots: each call's events arrive in event order."""
    sim.sink.behave(delay=0.01)
    config = make_config(tmp_path, [hook(at(sim, "a"), max_in_flight=4)])
    types = [EventType.CALL_STARTED, EventType.CALL_ENDED, EventType.RECORDING_AVAILABLE,
             EventType.CALL_COMPLETED]
    async with running(config, store) as relay:
        expected = {f"call_{n}": await send(store, relay, f"call_{n}", types) for n in range(12)}
        received = await sim.sink.wait_for(lambda r: len(r) == 48, timeout=10)
    arrived: dict[str, list[str | None]] = defaultdict(list)
    for request in received:
        arrived[request.json()["data"]["call_id"]].append(request.header("webhook-id"))
    assert arrived == expected


async def test_in_flight_limit_per_endpoint(sim: Simulator, store: SQLiteStore,
                                            tmp_path: Path) -> None:
    """max_in_flight = 2: six independent 0.3 s deliveries take three rounds, not one."""
    sim.sink.behave(delay=0.3)
    config = make_config(tmp_path, [hook(at(sim, "a"), max_in_flight=2, timeout=5)])
    async with running(config, store) as relay:
        started = time.monotonic()
        for n in range(6):
            await send(store, relay, f"call_{n}")
        await wait_until(lambda: all_delivered(store), 5, "all six delivered")
        elapsed = time.monotonic() - started
    assert 0.85 <= elapsed < 2.5


async def test_stop_lets_the_attempt_in_flight_finish_and_records_it(
        sim: Simulator, store: SQLiteStore, tmp_path: Path) -> None:
    """stop() claims nothing new but waits for the attempt under way, and records it."""
    sim.sink.behave(delay=0.5)
    config = make_config(tmp_path, [hook(at(sim, "a"), timeout=5)])
    relay = Relay(config, store, idle_wait=0.2)
    async with anyio.create_task_group() as tg:
        await tg.start(relay.run)
        await send(store, relay, "call_1")
        await sim.sink.wait_for(lambda r: len(r) == 1)
        relay.stop()
    assert await all_delivered(store)


async def test_deliveries_to_a_removed_endpoint_die_saying_so(
        sim: Simulator, store: SQLiteStore, tmp_path: Path) -> None:
    """Queued for an endpoint that left the config: dead with a reason, nothing sent there."""
    old = make_config(tmp_path, [hook(at(sim, "old"))])
    await emit(store, "call_1", [EventType.CALL_STARTED], now=time.time())
    await store.fan_out(Relay(old, store)._route, time.time())
    new = make_config(tmp_path, [hook(at(sim, "new"))])
    async with running(new, store):
        await wait_until(lambda: store.list_deliveries(only=ListFilter.DEAD), 5, "dead")
    (row,) = await store.list_deliveries()
    assert (row.endpoint, row.last_error) == (at(sim, "old"), UNCONFIGURED)
    assert sim.sink.requests == []


async def test_reload_applies_new_endpoints_to_new_events(
        sim: Simulator, store: SQLiteStore, tmp_path: Path) -> None:
    """After reconfigure (SIGHUP) new events also go to an endpoint added to the config."""
    first = make_config(tmp_path, [hook(at(sim, "old"))])
    async with running(first, store) as relay:
        await send(store, relay, "call_1")
        await sim.sink.wait_for(lambda r: len(to(r, "old")) == 1)
        relay.reconfigure(make_config(tmp_path, [hook(at(sim, "old")), hook(at(sim, "new"))]))
        await send(store, relay, "call_2")
        received = await sim.sink.wait_for(lambda r: len(to(r, "new")) == 1)
    assert received[-1].json()["data"]["call_id"] == "call_2"
    assert len(to(sim.sink.requests, "old")) == 2


async def test_the_loop_reports_progress_while_idle(store: SQLiteStore, tmp_path: Path) -> None:
    """progress() (the watchdog's input) moves on even when there is nothing to deliver."""
    relay = Relay(make_config(tmp_path, []), store, idle_wait=0.05)
    async with anyio.create_task_group() as tg:
        await tg.start(relay.run)
        before = relay.progress()
        await anyio.sleep(0.3)
        assert relay.progress() > before
        assert relay.describe() == "0 deliveries in flight, 0 queued"
        relay.stop()


async def test_a_writer_that_cannot_record_ages_the_relays_progress(
        sim: Simulator, store: SQLiteStore, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Delivered, but the result cannot be recorded: progress() stops at that moment while
    the loop goes on, and moves again once the database takes the batch."""
    refused: list[float] = []
    record = store.record_attempts

    async def refuse(*_: object) -> None:
        refused.append(time.monotonic())
        raise TransientStoreError("database or disk is full")

    monkeypatch.setattr(store, "record_attempts", refuse)
    monkeypatch.setattr("worker.store.retry.FIRST_DELAY", 0.01)
    config = make_config(tmp_path, [hook(at(sim, "a"))])
    async with running(config, store) as relay:
        await send(store, relay, "call_1")
        await wait_until(lambda: len(refused) >= 3, 10, "refused writes")
        await anyio.sleep(0.5)  # the loop goes round (idle_wait 0.2) meanwhile
        assert relay.progress() <= refused[0]  # not past the first refused write
        monkeypatch.setattr(store, "record_attempts", record)
        await wait_until(lambda: all_delivered(store), 10, "recorded at last")
        await wait_until(lambda: relay.progress() > refused[-1], 5, "progress again")
