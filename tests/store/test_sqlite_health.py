"""The SQLite backend's health: a file deleted, replaced or corrupt, and failing writes."""

from __future__ import annotations

import importlib.util
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.store.support import T0, tracked
from worker.store import jobs
from worker.store.base import NewCall, PermanentStoreError, StoreNotFoundError
from worker.store.errors import BackendUnavailableError, TransientStoreError
from worker.store.factory import open_store
from worker.store.sqlite_db import translate

pytestmark = pytest.mark.anyio


def delete(path: Path) -> None:
    for leftover in path.parent.glob(path.name + "*"):
        leftover.unlink()


def replace(path: Path) -> None:
    path.rename(path.with_name("old.db"))
    sqlite3.connect(path).close()


@pytest.mark.parametrize(("change", "said"), [(delete, "deleted"), (replace, "replaced")])
async def test_a_deleted_or_replaced_file_is_reported_by_the_probe(
        tmp_path: Path, change: Callable[[Path], None], said: str) -> None:
    """Writing on to an unlinked file would lose everything, and another file at our path
    (a restore, a `track` after a delete) is not ours: the probe says which."""
    path = tmp_path / "callwatch.db"
    store = await open_store(path)
    try:
        assert (await store.probe()).ok
        change(path)
        health = await store.probe()
        assert not health.ok and health.problem is not None and said in health.problem
    finally:
        await store.close()


async def test_a_corrupt_file_is_refused_at_open_naming_the_file(tmp_path: Path) -> None:
    """Garbage where the database should be: one permanent error that names the file."""
    path = tmp_path / "callwatch.db"
    store = await open_store(path)
    await tracked(store, "a")
    await store.close()
    data = bytearray(path.read_bytes())
    data[100:4096 * 2] = b"\xff" * (4096 * 2 - 100)  # the header's tail and the first pages
    path.write_bytes(bytes(data))
    with pytest.raises(PermanentStoreError, match=str(path)):
        await open_store(path)


async def test_failing_writes_turn_the_probe_red_until_one_succeeds(tmp_path: Path) -> None:
    """A store whose writes fail says so, and since when; a good write clears it."""
    path = tmp_path / "callwatch.db"
    store = await open_store(path)
    blocker = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        db = store.db  # type: ignore[attr-defined]
        await db.fetchall("PRAGMA busy_timeout=50")  # fail fast instead of after 10 s
        with pytest.raises(TransientStoreError):
            await store.track(NewCall(provider="envoy", call_id="a"), T0)
        health = await store.probe()
        assert not health.ok and health.problem is not None
        blocker.execute("ROLLBACK")
        assert await store.track(NewCall(provider="envoy", call_id="a"), T0)
        assert (await store.probe()).ok
    finally:
        blocker.close()
        await store.close()


async def test_status_does_not_create_a_database(tmp_path: Path) -> None:
    """Readers open with create=False: a missing file is an answer, not a new empty file."""
    with pytest.raises(StoreNotFoundError):
        await open_store(tmp_path / "none.db", create=False)
    assert not (tmp_path / "none.db").exists()


async def test_a_postgresql_url_without_the_backend_is_a_clear_error() -> None:
    """Until the PostgreSQL backend is built in, its URL says so in one line."""
    if importlib.util.find_spec("worker.store.postgres") is not None:
        pytest.skip("the PostgreSQL backend is built in")
    with pytest.raises(BackendUnavailableError, match="PostgreSQL is not available"):
        await open_store("postgresql://callwatch@127.0.0.1:1/none")


def test_driver_errors_are_sorted_into_transient_and_permanent() -> None:
    """Busy, locked, full, I/O are transient; constraints and corruption are permanent."""
    def error(kind: type[sqlite3.Error], name: str) -> sqlite3.Error:
        exc = kind("x")
        exc.sqlite_errorname = name
        return exc

    for name in ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR_WRITE",
                 "SQLITE_READONLY"):
        assert isinstance(translate(error(sqlite3.OperationalError, name), "w"),
                          TransientStoreError)
    for name in ("SQLITE_CONSTRAINT_NOTNULL", "SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_TOOBIG"):
        assert isinstance(translate(error(sqlite3.DatabaseError, name), "w"),
                          PermanentStoreError)


def test_the_write_probe_fails_on_a_database_that_refuses_writes(tmp_path: Path) -> None:
    """A read-only database passes BEGIN IMMEDIATE; the probe's header write does not, and
    the probe writes nothing on a writable one."""
    path = tmp_path / "callwatch.db"
    with sqlite3.connect(path) as setup:
        setup.execute("PRAGMA user_version = 7")
    writable = sqlite3.connect(path, isolation_level=None)
    jobs.write_probe(writable)
    assert writable.execute("PRAGMA user_version").fetchone() == (7,)
    writable.close()
    read_only = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError) as refused:
            jobs.write_probe(read_only)
        assert isinstance(translate(refused.value, "probe"), TransientStoreError)
        assert not read_only.in_transaction
    finally:
        read_only.close()


async def test_a_call_whose_metadata_cannot_be_read_is_still_listed(tmp_path: Path) -> None:
    """``status`` lists every call even when one's metadata is nested past what JSON reads;
    that call is set aside at its claim while the others are claimed."""
    path = tmp_path / "callwatch.db"
    store = await open_store(path)
    try:
        await tracked(store, "bad", "good")
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE calls SET metadata = ? WHERE call_id = 'bad'",
                         ('{"a":' * 5000 + "{}" + "}" * 5000,))
        listed = {c.call_id: c for c in await store.list_calls(limit=10, include_terminal=True)}
        assert set(listed) == {"bad", "good"}
        assert listed["bad"].metadata == jobs.UNREADABLE_METADATA
        claimed = await store.claim_due_calls("envoy", T0, 10)
        assert [c.call_id for c in claimed] == ["good"]
        assert (await store.counts()).calls_by_state[("envoy", "set_aside")] == 1
    finally:
        await store.close()


async def test_a_closed_store_refuses_jobs_instead_of_hanging(tmp_path: Path) -> None:
    """After close() the job thread is gone: a probe or a read raises at once, never waits
    forever (a /healthz during shutdown must still answer)."""
    store = await open_store(tmp_path / "callwatch.db")
    await store.close()
    with pytest.raises(PermanentStoreError, match="closed"):
        await store.get_call("ultravox", "x")
