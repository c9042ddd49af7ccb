"""When a PostgreSQL worker's lane next has work: free calls, and other workers' leases.

``next_due_at`` runs on every idle lane, so it must be index probes, not a scan of the
provider's calls; these pin down what it answers with several workers on one database.
"""

from __future__ import annotations

import pytest

from tests.store.support import T0
from worker.database_url import parse_postgres_url
from worker.store import postgres_sql as sql
from worker.store.base import NewCall
from worker.store.postgres import PostgresStore

pytestmark = pytest.mark.anyio


async def test_next_due_counts_free_calls_and_other_workers_leases_from_their_end(
        pg_url: str) -> None:
    """A worker's own leased calls do not count (their results are on the way); another
    worker's count from its lease's end; a free call from when it is due."""
    where = parse_postgres_url(pg_url)
    a = await PostgresStore.open(where, owner="host:1:a", lease_seconds=30.0)
    b = await PostgresStore.open(where, owner="host:2:b", lease_seconds=30.0)
    try:
        await a.track_many([(NewCall(provider="envoy", call_id="first"), T0),
                            (NewCall(provider="envoy", call_id="second"), T0 + 10)])
        assert await a.next_due_at("envoy") == T0
        assert [c.call_id for c in await a.claim_due_calls("envoy", T0 + 1, 1)] == ["first"]
        assert await a.next_due_at("envoy") == T0 + 10  # its own lease: not counted
        assert await b.next_due_at("envoy") == T0 + 10  # a's lease ends at T0 + 31
        assert [c.call_id for c in await b.claim_due_calls("envoy", T0 + 10, 5)] == ["second"]
        assert await a.next_due_at("envoy") == T0 + 40  # b's lease on "second" ends then
        assert await b.next_due_at("envoy") == T0 + 31  # a's lease on "first" ends then
        assert await a.next_due_at("ultravox") is None
    finally:
        await a.close()
        await b.close()


async def test_next_due_reads_two_indexes_not_every_call(pg_url: str) -> None:
    """The plan of the statement on a table with many calls has no sequential scan."""
    where = parse_postgres_url(pg_url)
    store = await PostgresStore.open(where)
    try:
        await store.track_many([(NewCall(provider="envoy", call_id=f"c{i}"), T0 + i)
                                for i in range(2000)])
        async with store.db.connection() as conn:
            await conn.execute("ANALYZE calls")
            plan = "\n".join(r[0] for r in await conn.fetch(
                "EXPLAIN " + sql.NEXT_DUE, "envoy", store.owner))
        assert "Seq Scan" not in plan, plan
    finally:
        await store.close()


async def test_a_connection_handed_back_mid_transaction_comes_out_clean(pg_url: str) -> None:
    """The pool sends no reset query (``keep_session``): asyncpg still rolls back what a
    holder left open, so the next holder is never inside someone else's transaction."""
    store = await PostgresStore.open(parse_postgres_url(pg_url), owner="host:1:a",
                                     lease_seconds=30.0)
    try:
        pool = store.db.pool
        conn = await pool.acquire()
        await conn.execute("BEGIN")
        await conn.execute("CREATE TEMPORARY TABLE left_open (x int)")
        await pool.release(conn)
        for _ in range(pool.get_size()):  # whichever connection comes out
            async with pool.acquire() as again:
                assert not again.is_in_transaction()
                assert await again.fetchval("SELECT to_regclass('left_open')") is None
    finally:
        await store.close()
