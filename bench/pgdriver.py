"""asyncpg against psycopg 3 (async, pipeline mode) on the PostgreSQL store's hot paths.

Same server, same schema (``worker/store/migrations_pg``), same SQL, alternated rounds:

* claim: lease 32 due calls (``FOR UPDATE SKIP LOCKED`` + the lease, one statement), then
  hand them back (the scheduler's claim, and the next claim's room);
* group commit: 32 call rows in one ``UPDATE ... FROM unnest(...)`` and 32 events in one
  ``INSERT ... SELECT unnest(...)``, in one transaction under the outbox's advisory lock;
* delivery: lease 32 due deliveries of one endpoint (the ordering gate included), then
  record them delivered (``executemany``, pipelined by both drivers) in one transaction.

    .venv/bin/python -m bench.pgdriver [--url postgresql://postgres@127.0.0.1/postgres]
                                       [--rounds 3] [--ops 150]

Each run creates and drops a database of its own. Figures: operations per second (one
operation = 32 rows), the median of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import asyncpg
import psycopg

BATCH = 32
LOCK = 0x6377_0002

CLAIM = ("WITH due AS (SELECT pk FROM calls WHERE provider = :p AND next_poll_at <= :now "
         "AND (lease_until IS NULL OR lease_until < :now) ORDER BY next_poll_at LIMIT :n "
         "FOR UPDATE SKIP LOCKED) UPDATE calls c SET lease_owner = :o, lease_until = :u "
         "FROM due WHERE c.pk = due.pk RETURNING c.pk, c.provider, c.call_id, c.status, "
         "c.metadata, c.next_poll_at")
RELEASE = "UPDATE calls SET lease_owner = NULL, lease_until = NULL WHERE pk = ANY(:pks)"
COMMIT_CALLS = (
    "UPDATE calls c SET status = v.status, updated_at = v.at, next_poll_at = v.at + 5, "
    "lease_owner = NULL, lease_until = NULL FROM unnest(:status::text[], :at::float8[], "
    ":pk::int8[]) AS v(status, at, pk) WHERE c.pk = v.pk")
COMMIT_EVENTS = (
    "INSERT INTO events (id, call_pk, type, key, occurred_at, body) SELECT * FROM "
    "unnest(:id::text[], :pk::int8[], :type::text[], :key::text[], :at::float8[], "
    ":body::bytea[]) ON CONFLICT DO NOTHING")
CLAIM_DELIVERIES = (
    "WITH due AS (SELECT q.pk FROM deliveries q WHERE q.endpoint = :e AND q.state = 'pending' "
    "AND q.next_attempt_at <= :now AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE "
    "p.call_pk = q.call_pk AND p.endpoint = q.endpoint AND p.event_seq < q.event_seq AND "
    "p.finished_at IS NULL) ORDER BY q.next_attempt_at LIMIT :n FOR UPDATE SKIP LOCKED) "
    "UPDATE deliveries d SET lease_owner = :o, next_attempt_at = :u FROM due, events e "
    "WHERE d.pk = due.pk AND e.seq = d.event_seq RETURNING d.pk, e.id, e.body")
FINISH = ("UPDATE deliveries SET state = 'delivered', finished_at = :now, attempts = "
          "attempts + 1, lease_owner = NULL, next_attempt_at = NULL WHERE pk = :pk")


def numbered(sql: str) -> tuple[str, list[str]]:
    """``:name`` -> ``$n`` (asyncpg), and the names in number order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"(?<!:):([a-z]+)", number, sql), names


def named(sql: str) -> str:
    """``:name`` -> ``%(name)s`` (psycopg)."""
    return re.sub(r"(?<!:):([a-z]+)", r"%(\1)s", sql)


class Asyncpg:
    name = "asyncpg"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def fetch(self, sql: str, **params: Any) -> list[Any]:
        text, names = numbered(sql)
        return list(await self.conn.fetch(text, *[params[n] for n in names]))

    async def execute(self, sql: str, **params: Any) -> None:
        text, names = numbered(sql)
        await self.conn.execute(text, *[params[n] for n in names])

    async def many(self, sql: str, rows: list[dict[str, Any]]) -> None:
        text, names = numbered(sql)
        await self.conn.executemany(text, [[r[n] for n in names] for r in rows])

    def transaction(self) -> Any:
        return self.conn.transaction()


class Psycopg:
    name = "psycopg"

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def fetch(self, sql: str, **params: Any) -> list[Any]:
        cur = await self.conn.execute(named(sql), params, prepare=True)
        return await cur.fetchall()

    async def execute(self, sql: str, **params: Any) -> None:
        await self.conn.execute(named(sql), params, prepare=True)

    async def many(self, sql: str, rows: list[dict[str, Any]]) -> None:
        async with self.conn.pipeline(), self.conn.cursor() as cur:
            await cur.executemany(named(sql), rows)

    def transaction(self) -> Any:
        return self.conn.transaction()


Driver = Asyncpg | Psycopg


async def claim(db: Driver, n: int) -> None:
    for _ in range(n):
        rows = await db.fetch(CLAIM, p=db.name, now=1e12, n=BATCH, o="bench", u=2e12)
        await db.execute(RELEASE, pks=[r[0] for r in rows])


async def group_commit(db: Driver, n: int) -> None:
    for i in range(n):
        pks = list(range(1, BATCH + 1))
        key = f"{db.name}-{i}-{uuid.uuid4().hex[:6]}"
        async with db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock(:k)", k=LOCK)
            await db.execute(COMMIT_CALLS, status=["live"] * BATCH, at=[1e9] * BATCH, pk=pks)
            await db.execute(COMMIT_EVENTS, id=[f"{key}-{p}" for p in pks], pk=pks,
                             type=["call.started"] * BATCH, key=[f"{key}-{p}" for p in pks],
                             at=[1e9] * BATCH, body=[b'{"x":1}'] * BATCH)


async def deliver(db: Driver, n: int) -> None:
    for _ in range(n):
        got = await db.fetch(CLAIM_DELIVERIES, e=db.name, now=1e12, n=BATCH, o="bench",
                             u=2e12)
        async with db.transaction():
            await db.many(FINISH, [{"now": 1e9, "pk": r[0]} for r in got])


async def prepare(conn: asyncpg.Connection, deliveries: int) -> None:
    schema = resources.files("worker.store").joinpath("migrations_pg/0001_schema.sql")
    await conn.execute(schema.read_text(encoding="utf-8"))
    for provider in ("asyncpg", "psycopg"):
        await conn.execute(
            "INSERT INTO calls (provider, call_id, tracked_at, updated_at, next_poll_at) "
            "SELECT $1, $1 || g, 0, 0, g FROM generate_series(1, 2000) g", provider)
    await conn.execute("INSERT INTO events (id, call_pk, type, key, occurred_at, body) "
                       "SELECT 'e' || g, 1 + g % 2000, 't', 'k' || g, 0, '\\x00' "
                       "FROM generate_series(1, $1) g", deliveries)
    for endpoint in ("asyncpg", "psycopg"):  # due in event order; the gate keeps call order
        await conn.execute(
            "INSERT INTO deliveries (event_seq, call_pk, endpoint, created_at, updated_at, "
            "next_attempt_at) SELECT seq, call_pk, $1, 0, 0, seq FROM events", endpoint)
    await conn.execute("ANALYZE")


PATHS: dict[str, Callable[[Driver, int], Awaitable[None]]] = {
    "claim + release": claim, "group commit (calls + events)": group_commit,
    "delivery claim + record": deliver}


async def main(url: str, rounds: int, ops: int) -> None:
    name = f"cw_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    target = url.rsplit("/", 1)[0] + f"/{name}"
    try:
        setup = await asyncpg.connect(target)
        await prepare(setup, deliveries=ops * BATCH * rounds + BATCH)
        await setup.close()
        a = Asyncpg(await asyncpg.connect(target))
        p = Psycopg(await psycopg.AsyncConnection.connect(target, autocommit=True))
        results: dict[tuple[str, str], list[float]] = {}
        for n in range(rounds):
            for path, work in PATHS.items():
                for db in ((a, p) if n % 2 == 0 else (p, a)):  # alternate who goes first
                    started = time.perf_counter()
                    await work(db, ops)
                    results.setdefault((path, db.name), []).append(
                        ops / (time.perf_counter() - started))
        await a.conn.close()
        await p.conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    print(f"| path ({BATCH} rows per operation) | asyncpg ops/s | psycopg ops/s | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for path in PATHS:
        fast = statistics.median(results[(path, "asyncpg")])
        slow = statistics.median(results[(path, "psycopg")])
        print(f"| {path} | {fast:.0f} | {slow:.0f} | {fast / slow:.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", type=int, default=150)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.rounds, args.ops))
