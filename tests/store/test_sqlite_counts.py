"""The SQLite side of maintained counts: triggers on deletes, the migration, the repair."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.store.support import T0, tracked
from worker import daemon
from worker.store.sqlite import SQLiteStore
from worker.store.sqlite_db import _statements

pytestmark = pytest.mark.anyio


def full_count(path: Path) -> dict[tuple[str, str], int]:
    with sqlite3.connect(path) as conn:
        return {(r[0], r[1]): r[2] for r in conn.execute(
            "SELECT provider, COALESCE(terminal, CASE WHEN set_aside_reason IS NOT NULL "
            "THEN 'set_aside' END, status), COUNT(*) FROM calls GROUP BY 1, 2")}


def sql(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


async def test_deleted_calls_leave_the_counts(tmp_path: Path) -> None:
    """A call deleted by any statement (untrack, prune) is taken off its count."""
    path = tmp_path / "callwatch.db"
    store = await SQLiteStore.open(path)
    try:
        await tracked(store, "a", "b", "c")
        await store.set_aside("envoy", "c", "bad", T0)
        sql(path, "DELETE FROM calls WHERE call_id IN ('a', 'c')")
        assert dict((await store.counts()).calls_by_state) == {("envoy", "pending"): 1}
        assert full_count(path) == {("envoy", "pending"): 1}
    finally:
        await store.close()


async def test_the_migration_counts_calls_tracked_before_it(tmp_path: Path) -> None:
    """A database from before migration 0008 gets counts of the calls it already holds."""
    path = tmp_path / "callwatch.db"
    store = await SQLiteStore.open(path)
    await tracked(store, "a", "b")
    await tracked(store, "a", provider="other")
    await store.set_aside("envoy", "b", "bad", T0)
    await store.close()
    sql(path, "DROP TRIGGER call_counts_insert", "DROP TRIGGER call_counts_update",
        "DROP TRIGGER call_counts_delete", "DROP TABLE call_counts", "DROP INDEX calls_newest",
        "PRAGMA user_version=7")  # just below 0008
    store = await SQLiteStore.open(path)
    try:
        assert dict((await store.counts()).calls_by_state) == {
            ("envoy", "pending"): 1, ("envoy", "set_aside"): 1, ("other", "pending"): 1}
    finally:
        await store.close()


async def test_the_daemon_repairs_counts_that_drifted(tmp_path: Path) -> None:
    """Counts edited by hand (or by a bug) are put right by the daemon's recount after start,
    with a warning; counts that are right are left alone, silently."""
    path = tmp_path / "callwatch.db"
    store = await SQLiteStore.open(path)
    try:
        await tracked(store, "a", "b")
        assert await store.recount_calls() == 0
        sql(path, "UPDATE call_counts SET n = 7",
            "INSERT INTO call_counts VALUES ('ghost', 'live', 3)")
        assert dict((await store.counts()).calls_by_state) != full_count(path)
        with capture_logs() as logs:
            await daemon.recount_calls(store)
        assert dict((await store.counts()).calls_by_state) == full_count(path) == {
            ("envoy", "pending"): 2}
        assert [e["groups"] for e in logs if e["event"] == "store.counts_repaired"] == [2]
        await tracked(store, "c")  # the counts are still kept after the repair
        with capture_logs() as logs:
            assert await store.recount_calls() == 0
        assert not [e for e in logs if e["event"] == "store.counts_repaired"]
        assert dict((await store.counts()).calls_by_state) == {("envoy", "pending"): 3}
    finally:
        await store.close()


def test_a_trigger_body_is_one_migration_statement() -> None:
    """Statements inside BEGIN ... END do not end the statement that holds them."""
    found = _statements("-- note\nCREATE TABLE t (a);\nCREATE TRIGGER x AFTER INSERT ON t\n"
                        "BEGIN\n  UPDATE t SET a = 1;\n  DELETE FROM t;\nEND;\nSELECT 1;")
    assert found == ["CREATE TABLE t (a)",
                     "CREATE TRIGGER x AFTER INSERT ON t\nBEGIN\n  UPDATE t SET a = 1;\n"
                     "  DELETE FROM t;\nEND", "SELECT 1"]
