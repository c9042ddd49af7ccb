"""The per-tree half of ``bench.counts``, run by path so ``worker`` comes from PYTHONPATH.

``python bench/counts_child.py build DB CALLS``: a database of CALLS calls in a realistic mix
of states (most settled long ago, some live, a few set aside), built through the store of
the tree under test, so its schema (and triggers, if any) are that tree's.
``python bench/counts_child.py measure DB REPEATS``: prints one JSON line of timings.
This file imports only ``worker`` and the standard library: it must run against old trees.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio

PROVIDERS = ("ultravox", "envoy", "apifycloud")
CHUNK = 50_000
T0 = 1_800_000_000.0
# (pk modulo 100) -> state change, applied with plain SQL after the bulk insert.
MIX = [
    ("UPDATE calls SET terminal = 'completed', status = 'ended', next_poll_at = NULL "
     "WHERE pk % 100 < 80"),
    ("UPDATE calls SET terminal = 'tracking_failed', status = 'pending', next_poll_at = NULL "
     "WHERE pk % 100 BETWEEN 80 AND 81"),
    "UPDATE calls SET status = 'live' WHERE pk % 100 BETWEEN 82 AND 91",
    "UPDATE calls SET status = 'ended' WHERE pk % 100 BETWEEN 92 AND 93",
    ("UPDATE calls SET set_aside_reason = 'bench', set_aside_at = 0, next_poll_at = NULL "
     "WHERE pk % 1000 = 999"),
]


async def build(db: Path, calls: int) -> dict[str, Any]:
    from worker.store.base import NewCall
    from worker.store.sqlite import SQLiteStore

    started = time.perf_counter()
    store = await SQLiteStore.open(db, owner="bench:1:counts")
    try:
        for first in range(0, calls, CHUNK):
            await store.track_many([
                (NewCall(provider=PROVIDERS[i % 3], call_id=f"bench-{i:08d}"), T0 + i * 0.01)
                for i in range(first, min(calls, first + CHUNK))])
    finally:
        await store.close()
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for statement in MIX:
            conn.execute(statement)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return {"seconds": time.perf_counter() - started}


async def _timed(repeats: int, fn: Any) -> tuple[float, float]:
    """(first call, median of the next ``repeats``) in milliseconds."""
    started = time.perf_counter()
    await fn()
    first = (time.perf_counter() - started) * 1000
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - started) * 1000)
    return first, statistics.median(times)


async def measure(db: Path, repeats: int) -> dict[str, Any]:
    try:
        from worker.cli.status import _overview
    except ImportError:  # before the command line moved under worker/cli/
        from worker.status import _overview  # type: ignore[import-not-found,no-redef]
    from worker.store.sqlite import SQLiteStore
    from worker.supervise import status_line

    started = time.perf_counter()
    store = await SQLiteStore.open(db, owner="bench:1:counts")
    opened = (time.perf_counter() - started) * 1000
    try:
        started = time.perf_counter()
        await store.recover()
        recovered = (time.perf_counter() - started) * 1000
        recounted = float("nan")  # the old trees have no maintained counts to check
        if hasattr(store, "recount_calls"):
            started = time.perf_counter()
            await store.recount_calls()
            recounted = (time.perf_counter() - started) * 1000
        counts = await store.counts()

        async def overview() -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                await _overview(store, True, 20, None, None)

        async def line() -> None:
            await status_line(store, [])

        result: dict[str, Any] = {
            "open_ms": opened, "recover_ms": recovered, "recount_ms": recounted,
            "calls": sum(counts.calls_by_state.values()), "active": counts.active,
        }
        for name, fn in (("counts", store.counts), ("status_line", line),
                         ("status_overview", overview)):
            first, median = await _timed(repeats, fn)
            result[f"{name}_first_ms"] = first
            result[f"{name}_ms"] = median
        return result
    finally:
        await store.close()


def main(argv: list[str]) -> int:
    task, db, number = argv[1], Path(argv[2]), int(argv[3])
    import worker
    result = anyio.run(build if task == "build" else measure, db, number)
    result["worker"] = str(Path(worker.__file__).parent)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
