"""The SQLite file stops growing: pruned pages are reused and handed back (auto_vacuum)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.store.support import T0
from worker.store import sqlite_db
from worker.store.base import NewCall
from worker.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio
BIG = {"note": "x" * 2000}  # metadata that makes each call a page or so


async def one_cycle(store: SQLiteStore, cycle: int, n: int = 400) -> None:
    """Track ``n`` calls, settle them (terminal: the trigger stamps settled_at), prune them."""
    start = T0 + cycle * 1000
    await store.track_many([(NewCall(provider="envoy", call_id=f"c{cycle}-{i}", metadata=BIG),
                             start) for i in range(n)])
    async with store.db.transaction() as db:
        await db.execute("UPDATE calls SET terminal = 'completed', updated_at = ?, "
                         "next_poll_at = NULL WHERE terminal IS NULL", (start + 1,))
    pruned = 0
    while batch := await store.prune_settled(start + 2, limit=150):
        pruned += len(batch)
    assert pruned == n
    await store.reclaim_space()


def pages(path: Path) -> tuple[int, int]:
    """(page_count, auto_vacuum) read by a connection of its own, after a checkpoint."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return (conn.execute("PRAGMA page_count").fetchone()[0],
                conn.execute("PRAGMA auto_vacuum").fetchone()[0])


async def test_the_page_count_stops_growing_across_prune_cycles(tmp_path: Path) -> None:
    """Five cycles of 400 calls in and out leave the file no bigger than after the first."""
    path = tmp_path / "callwatch.db"
    store = await SQLiteStore.open(path)
    try:
        empty, mode = pages(path)
        assert mode == sqlite_db.AUTO_VACUUM_INCREMENTAL  # a new file has it from the start
        counts = []
        for cycle in range(5):
            await one_cycle(store, cycle)
            counts.append(pages(path)[0])
        assert max(counts) <= counts[0] and counts[-1] <= empty + 16
        assert (await store.table_stats()).calls == 0
    finally:
        await store.close()


def old_file(path: Path, calls: int) -> None:
    """A database made before auto_vacuum was the default (schema of the migrations)."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE filler (x BLOB)")
        conn.executemany("INSERT INTO filler VALUES (randomblob(4000))", [()] * calls)
        conn.execute("DROP TABLE filler")  # free pages that only a VACUUM returns
    assert pages(path)[1] == 0


async def test_a_small_old_file_is_converted_at_start(tmp_path: Path) -> None:
    """An old, small file gets incremental auto_vacuum (one VACUUM) when it is opened."""
    path = tmp_path / "callwatch.db"
    old_file(path, 50)
    before, _ = pages(path)
    store = await SQLiteStore.open(path)
    await store.close()
    after, mode = pages(path)
    assert mode == sqlite_db.AUTO_VACUUM_INCREMENTAL and after < before


async def test_a_large_old_file_waits_for_prune_vacuum(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the size bound the file is left as it is until `prune --vacuum` (vacuum())."""
    monkeypatch.setattr(sqlite_db, "VACUUM_AT_START_BYTES", 4096)
    path = tmp_path / "callwatch.db"
    old_file(path, 50)
    store = await SQLiteStore.open(path)
    try:
        assert pages(path)[1] == 0
        await store.vacuum()
    finally:
        await store.close()
    assert pages(path)[1] == sqlite_db.AUTO_VACUUM_INCREMENTAL


async def test_migration_0007_stamps_calls_already_settled(tmp_path: Path) -> None:
    """A file at schema 5 with a terminal call: after the upgrade it has a settled time."""
    path = tmp_path / "callwatch.db"
    with sqlite3.connect(path) as conn:
        for number, _, sql in sqlite_db.migrations():
            if number <= 5:
                for statement in sqlite_db._statements(sql):
                    conn.execute(statement)
        conn.execute("PRAGMA user_version=5")
        conn.execute("INSERT INTO calls (provider, call_id, terminal, tracked_at, updated_at) "
                     "VALUES ('envoy', 'old', 'completed', ?, ?)", (T0, T0 + 5))
        conn.execute("INSERT INTO calls (provider, call_id, tracked_at, updated_at, "
                     "next_poll_at) VALUES ('envoy', 'live', ?, ?, ?)", (T0, T0, T0))
    store = await SQLiteStore.open(path)
    try:
        [gone] = await store.prune_settled(T0 + 6, limit=10)
        assert (gone.call_id, gone.settled_at) == ("old", T0 + 5)
        assert await store.get_call("envoy", "live") is not None
    finally:
        await store.close()
