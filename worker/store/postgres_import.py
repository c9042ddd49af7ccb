"""``callwatch migrate --from sqlite:PATH``: move a SQLite database into an empty PostgreSQL one.

Users switching to PostgreSQL must not lose their tracked calls, nor the history that makes
the promises hold (an event already emitted must not be emitted again; a delivery made must
not be made again). The two schemas have the same tables and columns, so the move is a copy:
every row with its keys (pk, seq), in one transaction, then the sequences set past them.
Leases are dropped: whatever the SQLite daemon held is free for the new workers.

The PostgreSQL database must hold no calls yet: merging two histories could give one event
seq two meanings, so that is refused with one line.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from worker.store.errors import PermanentStoreError
from worker.store.planning import worker_identity
from worker.store.postgres import open_backend
from worker.store.postgres_db import Connections
from worker.store.postgres_retention import PRUNED_CURSOR
from worker.store.sqlite import SQLiteStore

log = structlog.get_logger("worker.store")

# In an order that satisfies the foreign keys; the sequence of each serial key to move on.
TABLES: tuple[tuple[str, str | None], ...] = (
    ("calls", "pk"),
    ("recordings", None),
    ("events", "seq"),
    ("deliveries", "pk"),
    ("delivery_attempts", "pk"),
    ("endpoints", None),
    ("outbox_cursors", None),
    ("archive_state", None),
)
# Cleared on the way: the SQLite daemon is stopped, its claims mean nothing now.
_RELEASED = {"lease_owner": None, "lease_until": None, "download_lease_owner": None,
             "download_lease_until": None}
CHUNK = 5000


async def import_sqlite(db: Connections, path: Path) -> dict[str, int]:
    """Copy every row of the SQLite database at ``path`` (already migrated to the current
    schema by opening it) into ``db``; return how many rows per table."""
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    copied: dict[str, int] = {}
    try:
        async with db.transaction() as conn:
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM calls)"):
                raise PermanentStoreError(f"{db.where} already holds calls: import only into "
                                          "an empty database")
            for table, serial in TABLES:
                cursor = source.execute(f"SELECT * FROM {table}")  # table names: constants
                columns = [d[0] for d in cursor.description]
                copied[table] = 0
                while chunk := cursor.fetchmany(CHUNK):
                    records = [_released(columns, row) for row in chunk]
                    await conn.copy_records_to_table(table, records=records, columns=columns)
                    copied[table] += len(records)
                if serial is not None:
                    await conn.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', '{serial}'), "
                        f"COALESCE((SELECT MAX({serial}) FROM {table}), 0) + 1, false)")
            await _keep_events_written(conn, _events_written(source))
    except sqlite3.Error as exc:
        raise PermanentStoreError(f"cannot read {path}: {exc}") from exc
    finally:
        source.close()
    log.info("store.imported", source=str(path), **copied)
    return copied


def _events_written(source: sqlite3.Connection) -> int:
    """The last event seq SQLite handed out: retention may have pruned the events past
    the last one left, and their seqs must never be handed out again."""
    row = source.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return int(row[0]) if row else 0


async def _keep_events_written(conn: asyncpg.Connection, written: int) -> None:
    """Move the events' sequence past ``written`` and keep it as the pruned high-water mark
    (``counts().events``), as ``postgres_retention`` does after a prune."""
    if not written:
        return
    await conn.execute(
        "SELECT setval(pg_get_serial_sequence('events', 'seq'), "
        "GREATEST(COALESCE((SELECT MAX(seq) FROM events), 0), $1) + 1, false)", written)
    await conn.execute(
        "INSERT INTO outbox_cursors (name, seq) VALUES ($1, $2) ON CONFLICT (name) "
        "DO UPDATE SET seq = GREATEST(outbox_cursors.seq, EXCLUDED.seq)", PRUNED_CURSOR, written)


def _released(columns: list[str], row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(_RELEASED.get(name, value) for name, value in zip(columns, row, strict=True))


async def import_from_sqlite(url: str, password: str | None, source: Path) -> dict[str, int]:
    """Bring the SQLite file at ``source`` to the current schema, then copy it into the
    PostgreSQL database at ``url`` (migrated first); rows copied per table."""
    if not source.is_file():  # noqa: ASYNC240 - one stat before a one-off command
        raise PermanentStoreError(f"no SQLite database at {source}")
    old = await SQLiteStore.open(source)
    await old.close()
    store = await open_backend(url, owner=worker_identity(), lease_seconds=30.0,
                               password=password)
    try:
        return await import_sqlite(store.db, source)
    finally:
        await store.close()
