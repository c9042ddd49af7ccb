"""The PostgreSQL side of maintained counts: triggers on deletes, the repair of drift."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import psycopg
import pytest
from structlog.testing import capture_logs

from tests.store.support import T0, ended_with_recording, live, poll, tracked
from worker.store.base import NewCall, Store
from worker.store.factory import open_store
from worker.store.postgres_db import SCHEMA_VERSION, migrations
from worker.store.postgres_import import import_from_sqlite
from worker.store.postgres_sql import SCHEMA_TABLE
from worker.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

RECOUNT = ("SELECT provider, COALESCE(terminal, CASE WHEN set_aside_reason IS NOT NULL "
           "THEN 'set_aside' END, status), COUNT(*) FROM calls GROUP BY 1, 2")


def sql(url: str, *statements: str) -> dict[tuple[str, str], int]:
    """Run ``statements``, then return the full count of the calls."""
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
        return {(r[0], r[1]): r[2] for r in conn.execute(RECOUNT).fetchall()}


async def test_deletes_leave_the_counts_and_drift_is_repaired(pg_url: str) -> None:
    """A deleted call is taken off its count; counts edited by hand are put right by
    ``recount_calls`` with a warning, and are kept exactly from then on."""
    store = await open_store(pg_url)
    try:
        await tracked(store, "a", "b", "c")
        await store.set_aside("envoy", "c", "bad", T0)
        after = sql(pg_url, "DELETE FROM calls WHERE call_id IN ('a', 'c')")
        assert dict((await store.counts()).calls_by_state) == after == {("envoy", "pending"): 1}
        sql(pg_url, "UPDATE call_counts SET n = 7",
            "INSERT INTO call_counts VALUES ('ghost', 'live', 3)")
        with capture_logs() as logs:
            assert await store.recount_calls() == 3  # pending, set_aside (was 0), ghost
        assert [e["groups"] for e in logs if e["event"] == "store.counts_repaired"] == [3]
        await tracked(store, "d")
        assert dict((await store.counts()).calls_by_state) == {("envoy", "pending"): 2}
        assert await store.recount_calls() == 0
    finally:
        await store.close()


# Triggers of calls that keep call_counts, and whether each fires per row (pg_trigger.tgtype
# bit 0): since 0009 inserts and deletes are counted per statement.
TRIGGERS = ("SELECT tgname, (tgtype & 1) = 1 FROM pg_trigger "
            "WHERE tgrelid = 'calls'::regclass AND tgname LIKE 'call_counts_%' ORDER BY 1")
# calls written by hand, as another statement of a transaction would: 200 envoy calls, one
# in four already ended.
INSERT_200 = ("INSERT INTO calls (provider, call_id, status, terminal, tracked_at, updated_at) "
              "SELECT 'envoy', 'sql' || i, CASE WHEN i % 4 = 0 THEN 'ended' ELSE 'pending' "
              "END, NULL, 0, 0 FROM generate_series(1, 200) AS i")


def batch(first: int, last: int) -> list[tuple[NewCall, float]]:
    return [(NewCall(provider=("envoy", "other")[i % 2], call_id=f"c{i}"), T0)
            for i in range(first, last)]


async def kept(store: Store) -> dict[tuple[str, str], int]:
    return dict((await store.counts()).calls_by_state)


async def test_many_calls_per_statement_from_several_workers_are_counted_exactly(
        pg_url: str) -> None:
    """Three workers each track 300 calls in one statement at once (overlapping: 500 new in
    all), then one transaction inserts, deletes many and changes states in several statements:
    the counts equal the calls every step of the way, and nothing needs repair."""
    stores = [await open_store(pg_url) for _ in range(3)]
    try:
        added = await asyncio.gather(*(store.track_many(batch(100 * w, 100 * w + 300))
                                       for w, store in enumerate(stores)))
        assert sum(added) == 500
        assert await kept(stores[0]) == {("envoy", "pending"): 250, ("other", "pending"): 250}
        await stores[1].set_aside("other", "c1", "bad", T0)
        with psycopg.connect(pg_url) as conn:  # one transaction, committed on leaving
            conn.execute(INSERT_200)
            conn.execute("DELETE FROM calls WHERE provider = 'other' AND call_id <> 'c1'")
            conn.execute("UPDATE calls SET terminal = 'completed' WHERE call_id LIKE 'sql1%'")
            conn.execute("DELETE FROM calls WHERE call_id IN ('c0', 'c2', 'sql4')")
        assert await kept(stores[2]) == {
            ("envoy", "pending"): 248 + 150 - 84, ("envoy", "ended"): 50 - 1 - 27,
            ("envoy", "completed"): 111, ("other", "set_aside"): 1}
        assert await kept(stores[2]) == sql(pg_url)
        assert await stores[0].recount_calls() == 0
        with psycopg.connect(pg_url, autocommit=True) as conn:
            assert conn.execute(TRIGGERS).fetchall() == [
                ("call_counts_delete", False), ("call_counts_insert", False),
                ("call_counts_update", True)]
    finally:
        for store in stores:
            await store.close()


async def at_0008_with_calls(url: str) -> None:
    """A database as a callwatch of migration 0008 left it, holding calls in three states."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SCHEMA_TABLE)
        for number, name, text in migrations():
            if number <= 8:  # the last migration of row triggers
                await conn.execute(text)
                await conn.execute("INSERT INTO callwatch_schema VALUES ($1, $2, 0)",
                                   number, name)
        await conn.execute(INSERT_200)
        await conn.execute("UPDATE calls SET set_aside_reason = 'bad' WHERE call_id = 'sql1'")
    finally:
        await conn.close()


async def test_a_database_at_0008_keeps_its_counts_through_the_migration(pg_url: str) -> None:
    """The counts 0008's row triggers kept are carried over as they are, and the statement
    triggers go on from them: inserts and deletes of many still leave exact counts."""
    await at_0008_with_calls(pg_url)
    before = {("envoy", "pending"): 149, ("envoy", "ended"): 50, ("envoy", "set_aside"): 1}
    assert sql(pg_url) == before
    store = await open_store(pg_url)
    try:
        assert await store.schema_version() == SCHEMA_VERSION
        assert await kept(store) == before
        assert await store.track_many(batch(0, 300)) == 300
        sql(pg_url, "DELETE FROM calls WHERE call_id LIKE 'sql%' AND status = 'pending' "
                    "AND set_aside_reason IS NULL")
        assert await kept(store) == {("envoy", "ended"): 50, ("envoy", "set_aside"): 1,
                                     ("envoy", "pending"): 150, ("other", "pending"): 150}
        assert await store.recount_calls() == 0
    finally:
        await store.close()


async def test_calls_imported_from_sqlite_arrive_with_their_counts(tmp_path: Path,
                                                                     pg_url: str) -> None:
    """``migrate --from sqlite:`` copies the calls in one COPY per chunk: PostgreSQL's
    counts equal SQLite's, state by state."""
    source = tmp_path / "old.db"
    old = await SQLiteStore.open(source)
    try:
        for call_id in ("a", "b"):  # due first
            await old.track(NewCall(provider="envoy", call_id=call_id), T0 - 10)
        await old.track_many(batch(0, 7000))  # more than one COPY chunk
        await poll(old, "a", live(), T0 + 1)
        await poll(old, "b", ended_with_recording(), T0 + 100)  # past the first claim's lease
        await old.set_aside("other", "c1", "bad", T0)
        expected = await kept(old)
    finally:
        await old.close()
    assert (await import_from_sqlite(pg_url, None, source))["calls"] == 7002
    store = await open_store(pg_url)
    try:
        assert await kept(store) == expected
        assert expected == {("envoy", "pending"): 3500, ("envoy", "live"): 1,
                            ("envoy", "ended"): 1, ("other", "pending"): 3499,
                            ("other", "set_aside"): 1}
        assert await store.recount_calls() == 0
    finally:
        await store.close()
