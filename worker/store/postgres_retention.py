"""Retention over PostgreSQL: a part of ``PostgresStore`` (migration 0003).

The same semantics as the SQLite part (``store/retention.py``): a batch finds up to
``limit`` prunable calls and deletes their rows, children first (attempts, deliveries,
events, recordings, then the calls), in one short transaction. The calls are locked
(``FOR UPDATE SKIP LOCKED``) so two workers pruning at once never take the same batch, and
a call some worker is writing is left for the next batch.

The outbox's high-water mark survives the prune: the largest seq deleted is kept in
``outbox_cursors`` (``PRUNED_CURSOR``), so ``counts().events`` (events ever written) never
goes back.
"""

from __future__ import annotations

import asyncpg
import structlog

from worker.store.base import PrunedCall, TableStats
from worker.store.postgres_db import Connections

log = structlog.get_logger("worker.store")

PRUNED_CURSOR = "events_pruned"  # outbox_cursors row: the largest seq retention deleted

# Settled before the cut-off, no delivery open, every event fanned out (an event past the
# relay's cursor has no deliveries *yet*: pruning it would lose them).
_PRUNABLE = (
    "SELECT c.pk, c.provider, c.call_id, c.settled_at FROM calls c "
    "WHERE c.settled_at IS NOT NULL AND c.settled_at < $1 AND c.pk > $2 "
    "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.call_pk = c.pk "
    "                AND d.finished_at IS NULL) "
    "AND NOT EXISTS (SELECT 1 FROM events e WHERE e.call_pk = c.pk AND e.seq > "
    "    COALESCE((SELECT seq FROM outbox_cursors WHERE name = 'deliveries'), 0)) "
    "ORDER BY c.pk LIMIT $3")

_DELETES = (
    "DELETE FROM delivery_attempts WHERE delivery_pk IN "
    "(SELECT pk FROM deliveries WHERE call_pk = ANY($1::int8[]))",
    "DELETE FROM deliveries WHERE call_pk = ANY($1::int8[])",
    "DELETE FROM events WHERE call_pk = ANY($1::int8[])",
    "DELETE FROM recordings WHERE call_pk = ANY($1::int8[])",
    "DELETE FROM calls WHERE pk = ANY($1::int8[])",
)

_KEEP_HIGH_WATER = (
    "INSERT INTO outbox_cursors (name, seq) "
    "SELECT $2, MAX(seq) FROM events WHERE call_pk = ANY($1::int8[]) HAVING MAX(seq) IS NOT NULL "
    "ON CONFLICT (name) DO UPDATE SET seq = GREATEST(outbox_cursors.seq, EXCLUDED.seq)")


class PostgresRetention:
    """Pruning and size figures for the PostgreSQL database of ``db``."""

    def __init__(self, db: Connections) -> None:
        self.db = db

    async def prune_settled(self, before: float, *, limit: int, dry_run: bool = False,
                            after: int = 0) -> list[PrunedCall]:
        if limit <= 0:
            return []
        if dry_run:
            async with self.db.connection() as conn:
                found = await conn.fetch(_PRUNABLE, before, after, limit)
            return _pruned(found)
        async with self.db.transaction() as conn:
            found = await conn.fetch(_PRUNABLE + " FOR UPDATE OF c SKIP LOCKED",
                                     before, after, limit)
            pks = [row[0] for row in found]
            if pks:
                await conn.execute(_KEEP_HIGH_WATER, pks, PRUNED_CURSOR)
                for statement in _DELETES:
                    await conn.execute(statement, pks)
        return _pruned(found)

    async def reclaim_space(self) -> int:
        """Nothing to do: PostgreSQL's autovacuum marks the dead rows' space reusable on its
        own, and new rows fill it; giving it back to the file system needs ``VACUUM FULL``
        (an exclusive lock), which is no incremental step. So 0."""
        return 0

    async def vacuum(self) -> None:
        """``VACUUM (ANALYZE)`` of the whole database (``prune --vacuum``): outside any
        transaction, as PostgreSQL requires. It frees dead rows for reuse and refreshes the
        planner's statistics without blocking other workers (unlike ``VACUUM FULL``)."""
        async with self.db.connection() as conn:
            await conn.execute("VACUUM (ANALYZE)")
        log.info("store.vacuumed", database=str(self.db.where),
                 size_bytes=(await self.table_stats()).size_bytes)

    async def table_stats(self) -> TableStats:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT pg_database_size(current_database()), "
                "(SELECT COUNT(*) FROM calls), (SELECT COUNT(*) FROM events), "
                "(SELECT COUNT(*) FROM deliveries), (SELECT COUNT(*) FROM delivery_attempts)")
        if row is None:  # a SELECT without FROM returns one row: never
            return TableStats(size_bytes=0, calls=0, events=0, deliveries=0, attempts=0)
        return TableStats(size_bytes=int(row[0]), calls=int(row[1]), events=int(row[2]),
                          deliveries=int(row[3]), attempts=int(row[4]))


def _pruned(found: list[asyncpg.Record]) -> list[PrunedCall]:
    return [PrunedCall(provider=row[1], call_id=row[2], settled_at=row[3], position=row[0])
            for row in found]
