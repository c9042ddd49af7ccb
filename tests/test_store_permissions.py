"""The database and its -wal/-shm files are private to their owner whatever the umask."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from worker.store.base import NewCall
from worker.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("umask", [0o022, 0o000, 0o002])
async def test_new_database_files_are_0600(tmp_path: Path, umask: int) -> None:
    """Under a permissive umask the database, -wal and -shm are still created 0600."""
    path = tmp_path / "sub" / "callwatch.db"
    old = os.umask(umask)
    try:
        store = await SQLiteStore.open(path)
        try:
            await store.track(NewCall(provider="ultravox", call_id="c1"), time.time())
            modes = {p.name: stat.S_IMODE(p.stat().st_mode)
                     for p in path.parent.iterdir() if p.name.startswith("callwatch.db")}
        finally:
            await store.close()
    finally:
        os.umask(old)
    assert modes == {"callwatch.db": 0o600, "callwatch.db-wal": 0o600, "callwatch.db-shm": 0o600}


async def test_existing_database_keeps_its_mode(tmp_path: Path) -> None:
    """A database the operator made group-readable on purpose is not changed behind them."""
    path = tmp_path / "callwatch.db"
    await (await SQLiteStore.open(path)).close()
    path.chmod(0o640)
    store = await SQLiteStore.open(path)
    await store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
