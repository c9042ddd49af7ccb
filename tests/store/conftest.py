"""The contract suite's one fixture: ``store_factory``, parametrised over every backend.

A backend joins with one entry in ``BACKENDS``: a function that, given the test's tmp_path,
returns the ``database`` value for ``open_store`` (a SQLite path, a PostgreSQL URL...). Each
store the factory opens talks to the *same* database, so two of them are two workers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from worker.store.base import Store
from worker.store.factory import open_store

BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Path | str]] = {
    "sqlite": lambda _, tmp: tmp / "state" / "callwatch.db",
    "postgresql": lambda request, _: str(request.getfixturevalue("pg_url")),  # tests/pg.py
}

StoreFactory = Callable[..., Awaitable[Store]]


@pytest.fixture(params=sorted(BACKENDS))
async def store_factory(request: pytest.FixtureRequest,
                        tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """``await store_factory(owner=..., lease_seconds=...)``: another store on the same
    database (another worker); all are closed at the end of the test."""
    database = BACKENDS[request.param](request, tmp_path)
    opened: list[Store] = []

    async def factory(*, owner: str | None = None, lease_seconds: float = 30.0) -> Store:
        store = await open_store(database, owner=owner, lease_seconds=lease_seconds)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()


@pytest.fixture
async def store(store_factory: StoreFactory) -> Store:
    """One store of the backend under test, owned by this process."""
    return await store_factory()
