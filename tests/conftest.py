"""Shared fixtures: anyio on asyncio (the backend uvicorn and aiosqlite run on)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from worker.store.sqlite import SQLiteStore

pytest_plugins = ["tests.s3server"]  # the session's S3 server (moto), for archive-target tests


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Every test starts from structlog's defaults: a command an earlier test ran through
    ``cli.main`` pointed logging at that test's captured stderr, which is closed by now."""
    yield
    structlog.reset_defaults()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """A real store on a fresh SQLite file (a few modules define their own)."""
    opened = await SQLiteStore.open(tmp_path / "callwatch.db")
    try:
        yield opened
    finally:
        await opened.close()


# PostgreSQL for the tests that want it: ``pg_server`` (session), ``pg_url`` (a fresh, empty
# database per test) and ``pg_migrated_url`` (a fresh one with the current schema); see
# tests/pg.py for where the server comes from and when tests skip.
# The store backends (tests/backends.py): ``backend`` and ``open_store`` run a test on each.
from tests.backends import backend, open_store  # noqa: E402, F401
from tests.pg import (  # noqa: E402, F401
    pg_databases,
    pg_migrated_databases,
    pg_migrated_url,
    pg_server,
    pg_url,
)
