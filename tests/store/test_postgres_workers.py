"""PostgreSQL with several workers at once: what only a server shared by processes can show."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import anyio
import anyio.lowlevel
import asyncpg
import pytest

from tests.store.support import POLICY, T0, ended_with_recording, live, poll, tracked
from tests.store.test_queues import ALL, to_a
from worker.database_url import parse_postgres_url
from worker.model import CallStatus, Snapshot
from worker.reconcile import on_poll
from worker.store.base import NewCall, PollApplied
from worker.store.errors import PermanentStoreError, TransientStoreError
from worker.store.postgres import PostgresStore
from worker.store.postgres_db import SCHEMA_VERSION, is_transient, migrations

pytestmark = pytest.mark.anyio


async def opened(pg_url: str, count: int, lease_seconds: float = 30.0) -> list[PostgresStore]:
    """``count`` stores (workers) opened at the same moment on one database."""
    where = parse_postgres_url(pg_url)
    return list(await asyncio.gather(*(PostgresStore.open(where, lease_seconds=lease_seconds)
                                       for _ in range(count))))


async def close_all(stores: list[PostgresStore]) -> None:
    for store in stores:
        await store.close()


async def test_three_workers_starting_at_once_on_an_empty_database(pg_url: str) -> None:
    """Migrations run under an advisory lock: all three open, the schema is applied once."""
    stores = await opened(pg_url, 3)
    try:
        assert [await s.schema_version() for s in stores] == [SCHEMA_VERSION] * 3
        async with stores[0].db.connection() as conn:
            # one row per migration file (numbers may leave gaps: 0008 came before 0003)
            assert await conn.fetchval("SELECT COUNT(*) FROM callwatch_schema") == len(
                migrations())
    finally:
        await close_all(stores)


async def test_concurrent_claims_never_hand_a_call_to_two_workers(pg_url: str) -> None:
    """Three workers claiming in parallel (SKIP LOCKED) take each due call exactly once."""
    stores = await opened(pg_url, 3)
    try:
        await stores[0].track_many([(NewCall(provider="envoy", call_id=f"c{i}"), T0)
                                    for i in range(300)])

        async def drain(store: PostgresStore, got: list[str]) -> None:
            while batch := await store.claim_due_calls("envoy", T0 + 1, 7):
                got += [c.call_id for c in batch]

        taken: list[list[str]] = [[], [], []]
        async with anyio.create_task_group() as tg:
            for store, got in zip(stores, taken, strict=True):
                tg.start_soon(drain, store, got)
        everything = Counter(call for got in taken for call in got)
        assert len(everything) == 300 and set(everything.values()) == {1}
    finally:
        await close_all(stores)


async def test_the_outbox_follows_commit_order_across_workers(pg_url: str) -> None:
    """Events from parallel workers get seq in commit order: a reader following seq that
    reads while they write never skips one that commits later."""
    stores = await opened(pg_url, 3)
    try:
        providers = ["envoy", "ultravox", "apifycloud"]  # one each: nobody claims another's
        for n in range(3):
            await tracked(stores[n], *[f"w{n}c{i}" for i in range(20)], provider=providers[n])
        seen: list[int] = []
        done = anyio.Event()

        async def follow() -> None:
            last = 0
            while not done.is_set() or last < 60:
                for event in await stores[0].events_after(last, 100):
                    seen.append(event.seq)
                    last = event.seq
                await anyio.lowlevel.checkpoint()

        async def work(n: int) -> None:
            claimed = await stores[n].claim_due_calls(providers[n], T0 + 1, 20)
            for call in claimed:  # one transaction each, interleaved with the other workers
                decision = on_poll(call, live(), T0 + 1, POLICY)
                await stores[n].apply_poll_results([PollApplied(decision=decision)], T0 + 1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            async with anyio.create_task_group() as writers:
                for n in range(3):
                    writers.start_soon(work, n)
            done.set()
        async with stores[0].db.connection() as conn:
            every = [r[0] for r in await conn.fetch("SELECT seq FROM events ORDER BY seq")]
        assert len(every) == 60 and seen == every  # nothing skipped, nothing twice
    finally:
        await close_all(stores)


async def test_a_stale_worker_cannot_overwrite_the_worker_that_took_over(pg_url: str) -> None:
    """A worker whose lease ran out (it stalled) writes nothing for a call another worker
    holds now: neither the state nor the events."""
    slow, fresh = await opened(pg_url, 2, lease_seconds=30.0)
    try:
        await tracked(slow, "c1")
        [stale] = await slow.claim_due_calls("envoy", T0, 5)
        [taken] = await fresh.claim_due_calls("envoy", T0 + 31, 5)  # slow's lease ran out
        late = on_poll(stale, Snapshot(status=CallStatus.ENDED, provider_status="ended"),
                       T0 + 32, POLICY)
        await slow.apply_poll_results([PollApplied(decision=late)], T0 + 32)
        assert await slow.call_events("envoy", "c1") == []
        await fresh.apply_poll_results([PollApplied(decision=on_poll(taken, live(), T0 + 33,
                                                                     POLICY))], T0 + 33)
        call = await fresh.get_call("envoy", "c1")
        assert call is not None and call.status == CallStatus.LIVE
    finally:
        await close_all([slow, fresh])


async def test_renewal_keeps_every_kind_of_lease_of_a_live_worker(pg_url: str) -> None:
    """renew_leases (the heartbeat) pushes a worker's call leases forward; a dead worker's
    run out and another worker takes them."""
    live_worker, other = await opened(pg_url, 2, lease_seconds=10.0)
    try:
        await tracked(live_worker, "c1", "c2")
        assert len(await live_worker.claim_due_calls("envoy", T0, 1)) == 1
        await live_worker.renew_leases(T0 + 8)
        claimed = await other.claim_due_calls("envoy", T0 + 15, 5)
        assert [c.call_id for c in claimed] == ["c2"]  # c1's lease now ends at T0 + 18
        assert [c.call_id for c in await other.claim_due_calls("envoy", T0 + 19, 5)] == ["c1"]
    finally:
        await close_all([live_worker, other])


async def test_only_work_still_held_is_renewed_and_dropped_work_is_taken_over(
        pg_url: str) -> None:
    """The heartbeat renews what the worker still holds, not all it has leased: a call, a
    download and a delivery it dropped unfinished (a refused set-aside or failure record,
    a crashed attempt, a claim whose reply was lost) run out after lease_seconds and another
    worker takes them, while the ones it still holds stay its own."""
    lease = 2.0  # the heartbeat renews every lease / 3 s, in real time
    one, two = await opened(pg_url, 2, lease_seconds=lease)
    try:
        now = time.time()
        for call_id in ("r1", "r2"):  # calls with a recording, then events to deliver
            await one.track(NewCall(provider="envoy", call_id=call_id), now)
            await poll(one, call_id, ended_with_recording(), now)
        await one.track_many([(NewCall(provider="ultravox", call_id=c), now)
                              for c in ("kept", "dropped", "lost")])
        assert len(await one.claim_due_calls("ultravox", now, 2)) == 2  # kept, dropped
        async with one.db.connection() as conn:  # as a claim whose reply never arrived
            await conn.execute("UPDATE calls SET lease_owner = $1, lease_until = $2 "
                               "WHERE call_id = 'lost'", one.owner, now + lease)
        with pytest.raises(PermanentStoreError):  # the scheduler gives the call up
            await one.set_aside("ultravox", "dropped", "refused: \x00", now)
        jobs = await one.claim_due_downloads(ALL, now, 10)
        assert len(jobs) == 2
        with pytest.raises(PermanentStoreError):  # the archiver gives the job up
            await one.record_download_failure(jobs[1], reason="refused: \x00",
                                              retry_at=now, counted=True)
        assert await one.fan_out(to_a, now) > 0
        [crashed] = (await one.claim_due_deliveries(now, free={}, default_free=8, limit=1,
                                                    lease_seconds=0.5)).deliveries
        [sending] = (await one.claim_due_deliveries(now, free={}, default_free=8, limit=1,
                                                    lease_seconds=60)).deliveries
        assert crashed.call_id != sending.call_id  # two heads of two chains
        assert await one.extend_call_leases(now) == 1  # "kept" alone: held and leased
        assert await one.extend_download_leases(now) == 1

        await anyio.sleep(2 * lease)
        later = time.time()
        taken = await two.claim_due_calls("ultravox", later, 10)
        assert sorted(c.call_id for c in taken) == ["dropped", "lost"]
        assert [j.key for j in await two.claim_due_downloads(ALL, later, 10)] == [jobs[1].key]
        delivered = (await two.claim_due_deliveries(later, free={}, default_free=8, limit=10,
                                                    lease_seconds=60)).deliveries
        assert [d.pk for d in delivered] == [crashed.pk]
    finally:
        await close_all([one, two])


async def test_a_call_tracked_anywhere_wakes_every_worker(pg_url: str) -> None:
    """LISTEN/NOTIFY: track in one process wakes wait_for_change in another at once."""
    waiting, tracking = await opened(pg_url, 2)
    try:
        assert not await waiting.wait_for_change(0.05)  # listening now; nothing happened

        async def track_soon() -> None:
            await anyio.sleep(0.2)
            await tracking.track(NewCall(provider="envoy", call_id="new"), T0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(track_soon)
            assert await waiting.wait_for_change(60)
    finally:
        await close_all([waiting, tracking])


async def test_a_lost_connection_is_transient_and_the_next_call_reconnects(
        pg_url: str) -> None:
    """pg_terminate_backend under a store: a call fails transient at worst, and the store
    works again without being reopened (the pool replaces dead connections)."""
    [store] = await opened(pg_url, 1)
    try:
        await tracked(store, "c1")
        admin = await asyncpg.connect(pg_url)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        finally:
            await admin.close()
        for _ in range(5):  # the pool replaces the dead connections one by one
            try:
                assert await store.get_call("envoy", "c1") is not None
                break
            except TransientStoreError:
                continue
        else:
            pytest.fail("the store never reconnected")
    finally:
        await store.close()


def test_sqlstate_classes_decide_transient_or_permanent() -> None:
    """Connection, rollback, resources and shutdown are retried; constraints are not."""
    assert is_transient(asyncpg.exceptions.AdminShutdownError("x"))
    assert is_transient(asyncpg.exceptions.SerializationError("x"))
    assert is_transient(asyncpg.exceptions.ConnectionDoesNotExistError("x"))
    assert is_transient(OSError("refused"))
    assert not is_transient(asyncpg.exceptions.UniqueViolationError("x"))
    assert not is_transient(asyncpg.exceptions.DataError("x"))
    assert issubclass(PermanentStoreError, Exception)

