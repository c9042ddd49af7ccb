"""The store backends the contract tests run against: one parametrisation for all.

``backend`` is "sqlite" (a real file in ``tmp_path``) or "postgresql" (a fresh database of
its own with the current schema, see tests/pg.py; skipped with one line when no PostgreSQL
is at hand, failed under ``CI=true``). ``open_store`` opens a store on that one database:
call it twice for two workers sharing it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from worker.database_url import parse_postgres_url
from worker.store.postgres import PostgresStore
from worker.store.sqlite import SQLiteStore

BACKENDS = ["sqlite", "postgresql"]

Opener = Callable[..., Awaitable[Any]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def open_store(backend: str, tmp_path: Path,
                     request: pytest.FixtureRequest) -> AsyncIterator[Opener]:
    """``await open_store(owner=None, lease_seconds=30)``: a store on this test's database;
    closed after."""
    # Already migrated (a copy of a template): these tests are about what the store does;
    # its migrations on PostgreSQL are tested where an empty database is asked for.
    url = request.getfixturevalue("pg_migrated_url") if backend == "postgresql" else None
    opened: list[Any] = []

    async def opener(owner: str | None = None, lease_seconds: float = 30.0) -> Any:
        store: Any
        if url is None:
            store = await SQLiteStore.open(tmp_path / "state" / "callwatch.db", owner=owner,
                                           lease_seconds=lease_seconds)
        else:
            store = await PostgresStore.open(parse_postgres_url(url), owner=owner,
                                             lease_seconds=lease_seconds)
        opened.append(store)
        return store

    yield opener
    for store in reversed(opened):
        await store.close()


def sqlite_only(store: object) -> None:
    """Skip the rest of a test that reads the SQLite file itself."""
    if not isinstance(store, SQLiteStore):
        pytest.skip("reads the SQLite file directly")


async def raw(store: object, statement: str) -> list[tuple[Any, ...]]:
    """Run one parameterless SQL statement on the store's own database (test set-up and
    inspection: a lost cursor, the attempt log); the rows it returns, as tuples."""
    if isinstance(store, SQLiteStore):
        with sqlite3.connect(store.path) as conn:
            return [tuple(row) for row in conn.execute(statement).fetchall()]
    assert isinstance(store, PostgresStore)
    async with store.db.connection() as conn:
        return [tuple(row) for row in await conn.fetch(statement)]
