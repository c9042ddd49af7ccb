"""Delivery rows on a real SQLite file: fan-out, the ordering gate, leases, 410 and replay."""

from __future__ import annotations

import re
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.backends import Opener, raw, sqlite_only
from tests.webhooks.support import CALL_TYPES, T0, emit, hook, make_config
from worker.model import EventType
from worker.webhooks.base import (
    AttemptLog,
    AttemptResult,
    Claim,
    ClaimedDelivery,
    DeliveryState,
    ListFilter,
)
from worker.webhooks.endpoints import UNSIGNABLE, Endpoints
from worker.webhooks.policy import Dead, Decision, Delivered, Disabled, Retry

pytestmark = pytest.mark.anyio
A, B, C = "https://a.example/hooks", "https://b.example/hooks", "https://c.example/mine"
LEASE = 60.0


@pytest.fixture
async def store(open_store: Opener) -> Any:
    return await open_store()


def endpoints(tmp_path: Path, *hooks: dict[str, object]) -> Endpoints:
    return Endpoints(make_config(tmp_path, hooks or [hook(A)]))


async def claim(store: Any, now: float, *, free: int = 8, limit: int = 100,
                per: dict[str, int] | None = None) -> list[ClaimedDelivery]:
    found: Claim = await store.claim_due_deliveries(now, free=per or {}, default_free=free,
                                                    limit=limit, lease_seconds=LEASE)
    return found.deliveries


async def record(store: Any, item: ClaimedDelivery, decision: Decision,
                 now: float, status: int | None = 500) -> None:
    attempt = AttemptLog(number=item.attempt, started_at=now, latency=0.01, status=status,
                         reply=b"nope")
    await store.record_attempts([AttemptResult(delivery=item, decision=decision,
                                               attempt=attempt)], now)


def ids(items: list[ClaimedDelivery]) -> list[str]:
    return [item.event_id for item in items]


async def test_fan_out_follows_filters_and_the_calls_own_url(store: Any,
                                                             tmp_path: Path) -> None:
    """Each event goes to every endpoint whose filter takes it, plus the call's --webhook."""
    routes = endpoints(tmp_path, hook(A), hook(B, events=["call.ended"]))
    await emit(store, "call_1", CALL_TYPES, webhook=C)
    await emit(store, "call_2", [EventType.CALL_ENDED])
    assert await store.fan_out(routes.route, T0) == 4
    rows = await store.list_deliveries(limit=100)
    got = sorted((r.call_id, r.event_type, r.endpoint) for r in rows)
    assert got == sorted([
        ("call_1", "call.started", A), ("call_1", "call.ended", A),
        ("call_1", "call.completed", A), ("call_1", "call.ended", B),
        ("call_1", "call.started", C), ("call_1", "call.ended", C),
        ("call_1", "call.completed", C),
        ("call_2", "call.ended", A), ("call_2", "call.ended", B),
    ])
    assert {r.state for r in rows} == {DeliveryState.PENDING}


async def test_fan_out_advances_a_cursor_and_a_rerun_adds_nothing(store: Any,
                                                                  tmp_path: Path) -> None:
    """Events are fanned out once; even from a lost cursor (a crash) no duplicate appears."""
    routes = endpoints(tmp_path)
    await emit(store, "call_1")
    assert await store.fan_out(routes.route, T0) == 3
    assert await store.fan_out(routes.route, T0) == 0
    await emit(store, "call_1", [EventType.CALL_ENDED])
    assert await store.fan_out(routes.route, T0, limit=1) == 1
    await raw(store, "DELETE FROM outbox_cursors")
    assert await store.fan_out(routes.route, T0) == 4
    assert len(await store.list_deliveries(limit=100)) == 4


async def test_call_url_without_any_configured_webhook_is_dead_at_once(
        store: Any, tmp_path: Path) -> None:
    """With no [[webhooks]] there is no secret: a --webhook delivery is dead, saying why."""
    routes = Endpoints(make_config(tmp_path, []))
    await emit(store, "call_1", [EventType.CALL_STARTED], webhook=C)
    await store.fan_out(routes.route, T0)
    (row,) = await store.list_deliveries(only=ListFilter.DEAD)
    assert (row.state, row.endpoint, row.last_error) == (DeliveryState.DEAD, C, UNSIGNABLE)
    assert await claim(store, T0 + 1) == []


async def test_later_events_of_a_call_wait_for_earlier_ones(store: Any,
                                                            tmp_path: Path) -> None:
    """Per (call, endpoint) only the oldest open delivery is sent; it unblocks the next when it
    is delivered or dies, never while it waits for a retry."""
    routes = endpoints(tmp_path)
    first, second, third = await emit(store, "call_1")
    await store.fan_out(routes.route, T0)
    waiting = await store.list_deliveries(call=("envoy", "call_1"))
    assert [r.next_attempt_at for r in waiting] == [T0, None, None]  # only the head is due
    (item,) = await claim(store, T0)
    assert item.event_id == first and item.attempt == 1
    await record(store, item, Retry(at=T0 + 10, reason="HTTP 500"), T0)
    assert await claim(store, T0 + 5) == []  # the retry is not due, and blocks the rest
    (item,) = await claim(store, T0 + 10)
    assert (item.event_id, item.attempt) == (first, 2)
    await record(store, item, Delivered(), T0 + 10, status=200)
    (item,) = await claim(store, T0 + 10)
    assert item.event_id == second
    await record(store, item, Dead(reason="HTTP 500; gave up"), T0 + 11)
    assert ids(await claim(store, T0 + 11)) == [third]


async def test_calls_and_endpoints_do_not_block_each_other(store: Any,
                                                           tmp_path: Path) -> None:
    """A failing delivery holds back only its own call at its own endpoint."""
    routes = endpoints(tmp_path, hook(A), hook(B))
    a1, a2, _ = await emit(store, "call_a")
    b1, _, _ = await emit(store, "call_b")
    await store.fan_out(routes.route, T0)
    heads = await claim(store, T0)
    assert sorted((i.event_id, i.endpoint) for i in heads) == sorted(
        [(a1, A), (a1, B), (b1, A), (b1, B)])
    for item in heads:
        failed = item.event_id == a1 and item.endpoint == A
        await record(store, item, Retry(at=T0 + 60, reason="x") if failed else Delivered(), T0)
    nxt = await claim(store, T0 + 1)
    assert (a2, B) in {(i.event_id, i.endpoint) for i in nxt}
    assert (a2, A) not in {(i.event_id, i.endpoint) for i in nxt}
    assert len(nxt) == 3  # a2 to B, b2 to A and to B


async def test_claim_respects_per_endpoint_room_and_the_global_limit(
        store: Any, tmp_path: Path) -> None:
    """No endpoint gets more than its free slots, and no claim more than the limit."""
    routes = endpoints(tmp_path, hook(A), hook(B))
    for n in range(6):
        await emit(store, f"call_{n}", [EventType.CALL_STARTED])
    await store.fan_out(routes.route, T0)
    got = await claim(store, T0, per={A: 2, B: 0}, limit=10)
    assert [i.endpoint for i in got] == [A, A]
    got = await claim(store, T0, per={A: 5, B: 5}, limit=3)
    assert len(got) == 3
    result = await store.claim_due_deliveries(T0, free={}, default_free=8, limit=0,
                                              lease_seconds=LEASE)
    assert result.deliveries == []


async def test_next_due_at_is_the_earliest_retry_not_leased(store: Any,
                                                            tmp_path: Path) -> None:
    """An idle claim says when to look again: the next retry, not a lease's expiry."""
    routes = endpoints(tmp_path)
    await emit(store, "call_1", [EventType.CALL_STARTED])
    await emit(store, "call_2", [EventType.CALL_STARTED])
    await store.fan_out(routes.route, T0)
    first, second = await claim(store, T0)
    await record(store, first, Retry(at=T0 + 7, reason="x"), T0)
    found = await store.claim_due_deliveries(T0 + 1, free={}, default_free=8, limit=10,
                                             lease_seconds=LEASE)
    assert found.deliveries == [] and found.next_due_at == T0 + 7
    assert second.pk  # still leased: its expiry (T0 + 60) is later than the retry


async def test_leased_delivery_is_claimed_again_only_after_its_lease(open_store: Opener,
                                                                     tmp_path: Path) -> None:
    """A claimed delivery whose result never comes is sent again once the lease runs out.

    (PostgreSQL leases for at most the store's lease_seconds, renewed while the worker
    lives, so a dead worker's deliveries come back within it: here both are LEASE.)"""
    store = await open_store(lease_seconds=LEASE)
    routes = endpoints(tmp_path)
    (only,) = await emit(store, "call_1", [EventType.CALL_STARTED])
    await store.fan_out(routes.route, T0)
    assert ids(await claim(store, T0)) == [only]
    assert await claim(store, T0 + LEASE - 1) == []
    again = await claim(store, T0 + LEASE + 1)
    assert ids(again) == [only] and again[0].attempt == 1  # nothing was recorded: same attempt


async def test_dead_relays_leases_are_released_at_start(tmp_path: Path,
                                                          open_store: Opener) -> None:
    """After kill -9 the next start sends the interrupted delivery at once, same attempt."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    first = await open_store(owner=f"{socket.gethostname()}:{gone}:dead")
    (only,) = await emit(first, "call_1", [EventType.CALL_STARTED])
    await first.fan_out(endpoints(tmp_path).route, T0)
    assert ids(await claim(first, T0)) == [only]
    await first.close()
    second = await open_store()
    assert await claim(second, T0 + 1) == []
    assert await second.recover_deliveries(T0 + 1) == 1
    again = await claim(second, T0 + 1)
    assert ids(again) == [only] and again[0].attempt == 1


async def test_clean_stop_hands_back_its_leases(store: Any, tmp_path: Path) -> None:
    """release_deliveries makes what we held due now, for the next start."""
    await emit(store, "call_1", [EventType.CALL_STARTED])
    await store.fan_out(endpoints(tmp_path).route, T0)
    assert len(await claim(store, T0)) == 1
    assert await store.release_deliveries(T0 + 1) == 1
    assert len(await claim(store, T0 + 1)) == 1


async def test_gone_disables_the_endpoint_and_everything_queued_for_it(
        store: Any, tmp_path: Path) -> None:
    """410: the endpoint's open deliveries wait as disabled, new ones too; others go on."""
    routes = endpoints(tmp_path, hook(A), hook(B))
    await emit(store, "call_1")
    await emit(store, "call_2", [EventType.CALL_STARTED])
    await store.fan_out(routes.route, T0)
    heads = await claim(store, T0)
    gone = next(i for i in heads if i.endpoint == A and i.call_id == "call_1")
    in_flight = next(i for i in heads if i.endpoint == A and i.call_id == "call_2")
    await record(store, gone, Disabled(reason="HTTP 410 Gone"), T0, status=410)
    await record(store, in_flight, Retry(at=T0 + 1, reason="HTTP 500"), T0)
    await emit(store, "call_3", [EventType.CALL_STARTED])
    await store.fan_out(routes.route, T0)
    assert {i.endpoint for i in await claim(store, T0 + 5)} == {B}
    counts = await store.delivery_counts()
    assert counts.disabled == 5  # call_1 x3, call_2, call_3 to A
    (endpoint,) = counts.disabled_endpoints
    assert (endpoint.url, endpoint.since, endpoint.reason) == (A, T0, "HTTP 410 Gone")


async def test_replay_re_enables_a_disabled_endpoint_in_order(store: Any,
                                                              tmp_path: Path) -> None:
    """Replaying to a disabled endpoint re-enables it; what waited is sent, in order."""
    routes = endpoints(tmp_path)
    first, second, _ = await emit(store, "call_1")
    await store.fan_out(routes.route, T0)
    (item,) = await claim(store, T0)
    await record(store, item, Disabled(reason="HTTP 410 Gone"), T0, status=410)
    replayed = await store.replay(T0 + 1, dead=True)
    assert (replayed.requeued, replayed.enabled) == (3, (A,))
    assert (await store.delivery_counts()).disabled_endpoints == ()
    (item,) = await claim(store, T0 + 1)
    assert (item.event_id, item.attempt) == (first, 1)
    await record(store, item, Delivered(), T0 + 1, status=200)
    assert ids(await claim(store, T0 + 1)) == [second]


async def test_replay_dead_since_requeues_with_a_fresh_schedule(store: Any,
                                                                tmp_path: Path) -> None:
    """replay --dead --since: only deliveries written since then, back at attempt 1."""
    routes = endpoints(tmp_path)
    (old,) = await emit(store, "call_old", [EventType.CALL_STARTED])
    await store.fan_out(routes.route, T0)
    (new,) = await emit(store, "call_new", [EventType.CALL_STARTED])
    await store.fan_out(routes.route, T0 + 100)
    for item in await claim(store, T0 + 100):
        await record(store, item, Dead(reason="HTTP 500; gave up after 4 attempts"), T0 + 100)
    assert (await store.delivery_counts()).dead == 2
    replayed = await store.replay(T0 + 200, dead=True, since=T0 + 50)
    assert (replayed.found, replayed.requeued) == (True, 1)
    (item,) = await claim(store, T0 + 200)
    assert (item.event_id, item.attempt) == (new, 1)
    (dead,) = await store.list_deliveries(only=ListFilter.DEAD)
    assert dead.event_id == old and dead.attempts == 1


async def test_replay_of_one_event_resends_even_a_delivered_one(store: Any,
                                                                tmp_path: Path) -> None:
    """replay EVENT_ID queues that event again (same id) even if it was delivered."""
    routes = endpoints(tmp_path)
    (only,) = await emit(store, "call_1", [EventType.CALL_STARTED])
    await store.fan_out(routes.route, T0)
    (item,) = await claim(store, T0)
    await record(store, item, Delivered(), T0, status=200)
    assert (await store.replay(T0 + 1, event_id=only)).requeued == 1
    assert (await store.replay(T0 + 1, event_id=only)).requeued == 0  # already pending
    assert ids(await claim(store, T0 + 1)) == [only]
    unknown = await store.replay(T0 + 1, event_id="msg_unknown")
    assert (unknown.found, unknown.requeued) == (False, 0)


async def test_replayed_earlier_event_goes_before_the_waiting_later_one(
        store: Any, tmp_path: Path) -> None:
    """A replayed event is sent before later events of its call still waiting for a retry."""
    routes = endpoints(tmp_path)
    first, second, _ = await emit(store, "call_1")
    await store.fan_out(routes.route, T0)
    (item,) = await claim(store, T0)
    await record(store, item, Dead(reason="gave up"), T0)
    (item,) = await claim(store, T0)
    assert item.event_id == second
    await record(store, item, Retry(at=T0 + 1, reason="HTTP 500"), T0)
    await store.replay(T0 + 0.5, event_id=first)
    waiting = await store.list_deliveries(call=("envoy", "call_1"))
    assert [r.next_attempt_at for r in waiting] == [T0 + 0.5, None, None]
    assert ids(await claim(store, T0 + 2)) == [first]


async def test_listing_filters_and_one_calls_deliveries(store: Any,
                                                        tmp_path: Path) -> None:
    """--failed shows retrying and disabled ones, --dead the dead, --endpoint one URL."""
    routes = endpoints(tmp_path, hook(A), hook(B))
    await emit(store, "call_1", [EventType.CALL_STARTED])
    await emit(store, "call_2", [EventType.CALL_STARTED])
    await store.fan_out(routes.route, T0)
    outcomes: dict[tuple[str, str], Decision] = {
        ("call_1", A): Retry(at=T0 + 9, reason="HTTP 503"), ("call_1", B): Dead(reason="x"),
        ("call_2", A): Delivered(), ("call_2", B): Disabled(reason="HTTP 410 Gone")}
    for item in await claim(store, T0):
        await record(store, item, outcomes[(item.call_id, item.endpoint)], T0)
    failed = await store.list_deliveries(only=ListFilter.FAILED)
    assert sorted((r.call_id, r.endpoint) for r in failed) == [("call_1", A), ("call_2", B)]
    (dead,) = await store.list_deliveries(only=ListFilter.DEAD)
    assert (dead.call_id, dead.endpoint, dead.last_error) == ("call_1", B, "x")
    assert {r.call_id for r in await store.list_deliveries(endpoint=A)} == {"call_1", "call_2"}
    mine = await store.list_deliveries(call=("envoy", "call_1"))
    assert [(r.endpoint, r.state, r.attempts, r.last_status) for r in mine] == [
        (A, DeliveryState.PENDING, 1, 500), (B, DeliveryState.DEAD, 1, 500)]
    assert mine[0].next_attempt_at == T0 + 9


async def test_every_attempt_is_logged_with_status_latency_and_reply(store: Any,
                                                                     tmp_path: Path) -> None:
    """The attempts log keeps status code, latency, error and the first bytes of the reply."""
    await emit(store, "call_1", [EventType.CALL_STARTED])
    await store.fan_out(endpoints(tmp_path).route, T0)
    (item,) = await claim(store, T0)
    await record(store, item, Retry(at=T0, reason="HTTP 500"), T0)
    rows = await raw(store, "SELECT attempt, status_code, latency, error, reply "
                     "FROM delivery_attempts")
    assert rows == [(1, 500, 0.01, None, b"nope")]


async def test_hot_path_never_scans_the_deliveries_table(store: Any,
                                                         tmp_path: Path) -> None:
    """Every statement of fan-out, claim and record is an index search (think 100k calls)."""
    sqlite_only(store)
    executed: list[str] = []
    store.db.set_trace_callback(executed.append)
    routes = endpoints(tmp_path, hook(A), hook(B))
    for n in range(3):
        await emit(store, f"call_{n}")
    await store.fan_out(routes.route, T0)
    decisions: list[Decision] = [Delivered(), Retry(at=T0 + 1, reason="x"), Dead(reason="y")]
    for round_ in range(3):
        for n, item in enumerate(await claim(store, T0 + round_ * 10)):
            await record(store, item, decisions[n % 3], T0 + round_ * 10)
    store.db.set_trace_callback(None)
    scans = re.compile(r"^SCAN (deliveries|d|p|q)\b")
    checked = 0
    with sqlite3.connect(store.path) as conn:
        for statement in executed:
            if "deliveries" not in statement or not statement.lstrip().startswith(
                    ("SELECT", "UPDATE", "WITH", "INSERT")):
                continue
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement)]
            assert not [step for step in plan if scans.match(step)], (statement, plan)
            checked += 1
    assert checked > 20
