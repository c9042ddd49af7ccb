"""Retention over SQLite: a part of ``SQLiteStore`` (migration 0007).

A batch is one job on the database thread (``SQLiteDatabase.write_job``): find up to
``limit`` prunable calls and delete their rows, children first (attempts, deliveries,
events, recordings, then the calls), inside one ``BEGIN IMMEDIATE``. Batches stay small
(the daemon uses 500 calls) so the write lock is never held for long; the caller pauses
between them.

The contract is ``RetentionStore`` in ``store/base.py``; this part uses only the connector's
public API, like ``deliveries.py`` and ``downloads.py``.
"""

from __future__ import annotations

import sqlite3

import aiosqlite

from worker.store import jobs
from worker.store.base import PrunedCall, TableStats
from worker.store.sqlite_db import SQLiteDatabase

# Settled before the cut-off, no delivery open, every event fanned out (an event past the
# relay's cursor has no deliveries *yet*: pruning it would lose them).
_PRUNABLE = (
    "SELECT c.pk, c.provider, c.call_id, c.settled_at FROM calls c "
    "WHERE c.settled_at IS NOT NULL AND c.settled_at < :before AND c.pk > :after "
    "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.call_pk = c.pk "
    "                AND d.finished_at IS NULL) "
    "AND NOT EXISTS (SELECT 1 FROM events e WHERE e.call_pk = c.pk AND e.seq > "
    "    COALESCE((SELECT seq FROM outbox_cursors WHERE name = 'deliveries'), 0)) "
    "ORDER BY c.pk LIMIT :limit")

_DELETES = (
    "DELETE FROM delivery_attempts WHERE delivery_pk IN "
    "(SELECT pk FROM deliveries WHERE call_pk IN ({pks}))",
    "DELETE FROM deliveries WHERE call_pk IN ({pks})",
    "DELETE FROM events WHERE call_pk IN ({pks})",
    "DELETE FROM recordings WHERE call_pk IN ({pks})",
    "DELETE FROM calls WHERE pk IN ({pks})",
)


def _prune(db: sqlite3.Connection, before: float, limit: int, after: int,
           dry_run: bool) -> list[PrunedCall]:
    found = db.execute(_PRUNABLE, {"before": before, "after": after, "limit": limit}).fetchall()
    pruned = [PrunedCall(provider=row[1], call_id=row[2], settled_at=row[3], position=row[0])
              for row in found]
    if pruned and not dry_run:
        pks = [p.position for p in pruned]
        marks = ",".join("?" * len(pks))
        for statement in _DELETES:
            db.execute(statement.format(pks=marks), pks)
    return pruned


class SQLiteRetention:
    """Pruning and size figures for the SQLite file of ``db``."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def prune_settled(self, before: float, *, limit: int, dry_run: bool = False,
                            after: int = 0) -> list[PrunedCall]:
        if limit <= 0:
            return []
        if dry_run:
            return await self._db.job(_prune, before, limit, after, True)
        return await self._db.write_job(jobs.transaction, _prune, before, limit, after, False)

    async def reclaim_space(self) -> int:
        return await self._db.release_free_pages()

    async def vacuum(self) -> None:
        await self._db.vacuum()

    async def table_stats(self, reader: aiosqlite.Connection) -> TableStats:
        """Counted on ``reader``, the store's second connection, beside the writer."""
        counts = {}
        for table in ("calls", "events", "deliveries", "delivery_attempts"):
            [(n,)] = await reader.execute_fetchall(f"SELECT COUNT(*) FROM {table}")  # noqa: S608 - fixed names
            counts[table] = int(n)
        return TableStats(size_bytes=await self._db.size_bytes(), calls=counts["calls"],
                          events=counts["events"], deliveries=counts["deliveries"],
                          attempts=counts["delivery_attempts"])
