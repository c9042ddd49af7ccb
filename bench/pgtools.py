"""PostgreSQL plumbing for the benchmarks: a fresh database per run, a bulk seed, /proc CPU.

A benchmark never reuses a database: ``fresh_database`` creates ``cw_bench_<random>`` on the
server the URL names (its role must be allowed to create databases) and drops it, with any
connection still on it, when the block exits, however it exits.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.common import cpu_seconds

# The lag probe of bench/scale.py: when each poll was due and when its answer was reconciled,
# recorded by the database itself, so the daemon's code is not instrumented.
LAG_SCHEMA = """
CREATE TABLE bench_polls (due float8, polled float8);
CREATE FUNCTION bench_poll() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO bench_polls VALUES (OLD.next_poll_at, NEW.last_polled_at); RETURN NULL; END $$;
CREATE TRIGGER bench_poll AFTER UPDATE OF last_polled_at ON calls FOR EACH ROW
    WHEN (NEW.last_polled_at IS DISTINCT FROM OLD.last_polled_at) EXECUTE FUNCTION bench_poll();
"""
DROP_LAG_SCHEMA = ("DROP TRIGGER bench_poll ON calls; DROP FUNCTION bench_poll(); "
                   "DROP TABLE bench_polls;")
RECOUNT = ("DELETE FROM call_counts; INSERT INTO call_counts (provider, state, n) "
           "SELECT provider, call_state(terminal, untracked_at, set_aside_reason, status), "
           "count(*) FROM calls GROUP BY 1, 2")
CALL_COLUMNS = ("provider", "call_id", "metadata", "tracked_at", "updated_at", "next_poll_at")


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead of its own."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@contextlib.asynccontextmanager
async def fresh_database(url: str, prefix: str = "cw_bench") -> AsyncIterator[str]:
    """The URL of a new empty database on ``url``'s server, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_database(url, name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def seed_calls(url: str, calls: Sequence[tuple[str, str, float]]) -> None:
    """``(provider, call_id, next_poll_at)`` rows into ``calls`` by one COPY, the way a
    migration or an import fills a table, rather than a million ``track`` transactions.

    The count triggers are off during the COPY (``session_replication_role``, superuser)
    and ``call_counts`` is rebuilt after it by migration 0008's own statement: a row trigger
    that upserts one counter row per inserted call updates that row a million times in one
    transaction, and each update walks the chain of versions before it (quadratic: a COPY
    of 1 000 000 calls did not finish in 3 minutes)."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            records = ((provider, call_id, "{}", due, due, due)
                       for provider, call_id, due in calls)
            await conn.copy_records_to_table("calls", records=records, columns=CALL_COLUMNS)
            await conn.execute(RECOUNT)
        await conn.execute("ANALYZE calls")
    finally:
        await conn.close()


async def backend_pids(url: str) -> list[int]:
    """The server processes serving ``url``'s database (its clients' connections)."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = "
                                "current_database() AND pid <> pg_backend_pid()")
    finally:
        await conn.close()
    return [int(r[0]) for r in rows]


def runqueue_wait(pid: int) -> float:
    """Seconds the threads of a process have spent runnable but waiting for a CPU so far
    (``/proc/PID/task/*/schedstat``): on a machine loaded by others, how much of a
    benchmark's latency was only its turn for a core."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def backends_cpu(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds so far of each server process still there (a closed one is left out)."""
    found = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            found[pid] = cpu_seconds(pid)
    return found


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU the processes seen at both ends used in between (new ones from their start)."""
    return sum(after[pid] - before.get(pid, 0.0) for pid in after)
