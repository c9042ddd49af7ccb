"""PostgreSQL ``call_counts`` triggers: per row (migration 0008) against per statement (0009).

Three databases of their own on one server, alternated round by round:

* ``row``: migrations up to 0008 (a row trigger per inserted, deleted or re-stated call);
* ``stmt``: up to 0009 (insert and delete counted once per statement, from transition
  tables; a change of state still a row trigger);
* ``stmt_upd``: as ``stmt`` with the change of state also per statement (a trigger on every
  UPDATE of calls, old and new transition tables joined on pk): the alternative 0009 rejects.

Workloads, each in one transaction that is rolled back (then VACUUM), so every round starts
from the same table:

* ``copy N``: COPY N calls into an empty table (``callwatch migrate --from sqlite:``);
* ``delete N``: one DELETE of N calls (prune);
* ``update N``: one UPDATE changing the state of N calls (``stmt_upd`` against the row trigger);
* ``poll``: the poll commit path on 8 000 calls: claim 32 (lease UPDATE), write them back
  (one UPDATE ... FROM unnest with a 1 KB snapshot, one call in 32 changing state),
  operations per second; ``renew``: one lease renewal of 512 calls, per second.

    .venv/bin/python -m bench.pgcounts [--url postgresql://postgres@127.0.0.1/postgres]
                                       [--sizes 5000 10000 20000 40000] [--rounds 2]

``--import-calls N`` instead times ``callwatch migrate --from sqlite:`` (``import_from_sqlite``,
with the current migrations) of a SQLite database of N calls made by ``SQLiteStore.track_many``,
and, apart, reading the same calls rows out of SQLite alone.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path

import asyncpg

from worker.store.base import NewCall
from worker.store.postgres_import import import_from_sqlite
from worker.store.sqlite import SQLiteStore

VARIANTS = ("row", "stmt", "stmt_upd")
COLUMNS = ["provider", "call_id", "status", "metadata", "tracked_at", "updated_at",
           "next_poll_at"]
STATEMENT_UPDATE = """
DROP TRIGGER call_counts_update ON calls;
CREATE FUNCTION call_counts_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO call_counts (provider, state, n)
        SELECT provider, state, sum(d) FROM (
            SELECT o.provider, call_state(o.terminal, o.untracked_at, o.set_aside_reason,
                                          o.status) AS state, -1 AS d
            FROM old_calls o JOIN new_calls n USING (pk)
            WHERE o.provider IS DISTINCT FROM n.provider
               OR call_state(o.terminal, o.untracked_at, o.set_aside_reason, o.status)
                  IS DISTINCT FROM call_state(n.terminal, n.untracked_at, n.set_aside_reason,
                                              n.status)
            UNION ALL
            SELECT n.provider, call_state(n.terminal, n.untracked_at, n.set_aside_reason,
                                          n.status), 1
            FROM old_calls o JOIN new_calls n USING (pk)
            WHERE o.provider IS DISTINCT FROM n.provider
               OR call_state(o.terminal, o.untracked_at, o.set_aside_reason, o.status)
                  IS DISTINCT FROM call_state(n.terminal, n.untracked_at, n.set_aside_reason,
                                              n.status)) AS c
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (provider, state) DO UPDATE SET n = call_counts.n + EXCLUDED.n;
    RETURN NULL;
END $$;
CREATE TRIGGER call_counts_update AFTER UPDATE ON calls
    REFERENCING OLD TABLE AS old_calls NEW TABLE AS new_calls
    FOR EACH STATEMENT EXECUTE FUNCTION call_counts_updated();
"""
POLL_CALLS = 8000
POLL_OPS = 150
RENEW_OPS = 100
SNAPSHOT = '{"status": "live", "note": "' + "x" * 1000 + '"}'
BATCH = 32


def migrations(upto: int) -> list[str]:
    found = []
    for entry in resources.files("worker.store").joinpath("migrations_pg").iterdir():
        if entry.name.endswith(".sql") and int(entry.name[:4]) <= upto:
            found.append((int(entry.name[:4]), entry.read_text()))
    return [text for _, text in sorted(found)]


def records(n: int, start: float = 1.7e9) -> list[tuple[object, ...]]:
    return [("envoy" if i % 4 else "other", f"c{i}", "pending", "{}", start, start, start + i)
            for i in range(n)]


async def timed(conn: asyncpg.Connection, work: Callable[[], Awaitable[object]]) -> float:
    """Seconds ``work`` takes inside a transaction that is then rolled back."""
    tx = conn.transaction()
    await tx.start()
    began = time.perf_counter()
    await work()
    took = time.perf_counter() - began
    await tx.rollback()
    await conn.execute("VACUUM calls, call_counts")
    return took


async def emptied(conn: asyncpg.Connection) -> None:
    """No calls and no counts (TRUNCATE: no trigger, the same start for every variant)."""
    await conn.execute("TRUNCATE calls, call_counts CASCADE")


async def copy(conn: asyncpg.Connection, n: int) -> float:
    await emptied(conn)
    rows = records(n)
    return await timed(conn, lambda: conn.copy_records_to_table(
        "calls", records=rows, columns=COLUMNS))


async def seeded(conn: asyncpg.Connection, n: int) -> None:
    await emptied(conn)
    await conn.copy_records_to_table("calls", records=records(n), columns=COLUMNS)
    await conn.execute("VACUUM ANALYZE calls, call_counts")


async def delete(conn: asyncpg.Connection, n: int) -> float:
    await seeded(conn, n)
    return await timed(conn, lambda: conn.execute("DELETE FROM calls"))


async def update(conn: asyncpg.Connection, n: int) -> float:
    await seeded(conn, n)
    return await timed(conn, lambda: conn.execute("UPDATE calls SET terminal = 'completed'"))


async def poll(conn: asyncpg.Connection) -> float:
    """Claim-and-commit operations per second, one call in 32 changing state."""
    await seeded(conn, POLL_CALLS)
    now = 1.7e9 + POLL_CALLS
    statuses = ["pending"] * (BATCH - 1) + ["live"]
    began = time.perf_counter()
    for op in range(POLL_OPS):
        now += 1
        async with conn.transaction():
            pks = [r[0] for r in await conn.fetch(
                "WITH due AS (SELECT pk FROM calls WHERE provider = 'envoy' AND "
                "next_poll_at <= $1::float8 AND (lease_until IS NULL OR lease_until < $1) "
                "ORDER BY next_poll_at LIMIT $2 FOR UPDATE SKIP LOCKED) UPDATE calls c SET "
                "lease_owner = 'w', lease_until = $1::float8 + 30 FROM due WHERE c.pk = due.pk "
                "RETURNING c.pk", now + 1e6, BATCH)]
        async with conn.transaction():
            await conn.execute(
                "UPDATE calls c SET status = v.status, updated_at = $1, next_poll_at = "
                "$1::float8 + 1e7, lease_owner = NULL, lease_until = NULL, last_snapshot = $4 "
                "FROM unnest($2::text[], $3::int8[]) AS v(status, pk) WHERE c.pk = v.pk", now,
                statuses[op % 2:] + statuses[:op % 2], pks, SNAPSHOT)
    return POLL_OPS / (time.perf_counter() - began)


async def renew(conn: asyncpg.Connection) -> float:
    """Lease renewals of 512 held calls (no state change) per second."""
    pks = [r[0] for r in await conn.fetch("SELECT pk FROM calls ORDER BY pk LIMIT 512")]
    began = time.perf_counter()
    for op in range(RENEW_OPS):
        await conn.execute("UPDATE calls SET lease_until = $1 WHERE pk = ANY($2)",
                           1.8e9 + op, pks)
    return RENEW_OPS / (time.perf_counter() - began)


# Which workloads tell the variants apart: inserts take the same triggers in stmt and
# stmt_upd, a change of state the same row trigger in row and stmt.
WORKLOADS = {"copy": (copy, ("row", "stmt")), "delete": (delete, ("row", "stmt")),
             "update": (update, ("row", "stmt_upd"))}


async def measure(conns: dict[str, asyncpg.Connection], sizes: list[int], rounds: int,
                  ) -> tuple[dict[tuple[str, str, int], list[float]], dict[str, list[float]]]:
    """Every workload on every variant it concerns, the order reversed every other round."""
    seconds: dict[tuple[str, str, int], list[float]] = {}
    rates: dict[str, list[float]] = {}
    for round_ in range(rounds):
        order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            rates.setdefault(f"poll {variant}", []).append(await poll(conns[variant]))
            rates.setdefault(f"renew {variant}", []).append(await renew(conns[variant]))
        for size in sizes:
            for variant in order:
                for name, (work, variants) in WORKLOADS.items():
                    if variant in variants:
                        took = await work(conns[variant], size)
                        seconds.setdefault((name, variant, size), []).append(took)
                        print(f"round {round_ + 1} {name:6} {variant:8} {size:>6}: "
                              f"{took:7.2f} s", flush=True)
    return seconds, rates


async def import_calls(url: str, n: int) -> None:
    """Seconds to move ``n`` calls from SQLite into an empty database, and to read them."""
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "old.db"
        old = await SQLiteStore.open(source)
        try:
            for first in range(0, n, 10_000):
                await old.track_many([
                    (NewCall(provider=("envoy", "other")[i % 2], call_id=f"c{i}",
                             metadata={"customer": f"cust-{i}", "campaign": "spring"}),
                     1.7e9 + i) for i in range(first, min(n, first + 10_000))])
        finally:
            await old.close()
        began = time.perf_counter()
        with sqlite3.connect(source) as conn:
            read = len(conn.execute("SELECT * FROM calls").fetchall())
        reading = time.perf_counter() - began
        admin = await asyncpg.connect(url)
        name = f"cw_pgimport_{uuid.uuid4().hex[:6]}"
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            began = time.perf_counter()
            copied = await import_from_sqlite(url.rsplit("/", 1)[0] + "/" + name, None, source)
            took = time.perf_counter() - began
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await admin.close()
    print(f"import of {copied['calls']} calls: {took:.2f} s "
          f"(reading the {read} calls rows out of SQLite alone: {reading:.2f} s)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1/postgres")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000, 40000])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--import-calls", type=int, default=0)
    args = parser.parse_args()
    if args.import_calls:
        await import_calls(args.url, args.import_calls)
        return
    admin = await asyncpg.connect(args.url)
    names = {v: f"cw_pgcounts_{v}_{uuid.uuid4().hex[:6]}" for v in VARIANTS}
    conns: dict[str, asyncpg.Connection] = {}
    try:
        for variant, name in names.items():
            await admin.execute(f'CREATE DATABASE "{name}"')
            conn = conns[variant] = await asyncpg.connect(args.url.rsplit("/", 1)[0] + "/" + name)
            for text in migrations(8 if variant == "row" else 9):
                await conn.execute(text)
            if variant == "stmt_upd":
                await conn.execute(STATEMENT_UPDATE)
        seconds, rates = await measure(conns, args.sizes, args.rounds)
        print("\nmedians (seconds; poll, renew: operations per second)")
        for (name, variant, size), values in sorted(seconds.items()):
            print(f"{name:6} {variant:8} {size:>6}  {statistics.median(values):8.3f}")
        for variant, values in rates.items():
            print(f"{variant:24} {statistics.median(values):8.0f} ops/s")
    finally:
        for conn in conns.values():
            await conn.close()
        for name in names.values():
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
