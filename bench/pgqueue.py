"""Claim-and-complete throughput of the store's queues against procrastinate, same server.

Two fresh databases on one PostgreSQL server (created and dropped here): one with callwatch's
schema (its own migrations), one with procrastinate's (``apply_schema_async``). Every round
runs each path once, the order reversed from one round to the next; figures are medians.

* ``procrastinate``: ``defer_async`` of ``jobs`` jobs (one call per job, as an application
  defers), then ``consumers`` loops of ``job_manager.fetch_job`` + ``finish_job`` (its own
  API, its own SQL functions) until the queue is empty.
* ``calls``: ``track`` of ``jobs`` calls (one call each), then ``consumers`` loops of
  ``claim_due_calls`` + ``apply_poll_results`` (the poll's result: nothing changed, next
  poll in a day), at each ``batch`` (1: one job per claim, as procrastinate; 32: the
  scheduler's claims under load).
* ``deliveries``: ``jobs`` events of as many calls, fanned out by ``fan_out`` (the store's
  own path; not timed against anything), then ``consumers`` loops of
  ``claim_due_deliveries`` + ``record_attempts`` (a 2xx) at each ``batch``.

Statements per job: the store's connections count what they send (asyncpg's query logger,
so BEGIN and COMMIT too); procrastinate's fetch and finish are one function call each.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio
import asyncpg
import procrastinate
from procrastinate.jobs import Status

from bench.common import PROVIDERS, Report, Table, cli
from bench.pgtools import fresh_database
from worker.database_url import parse_postgres_url
from worker.reconcile import Decision
from worker.store.base import NewCall, PollApplied
from worker.store.postgres import PostgresStore
from worker.store.postgres_db import (
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    Connections,
    keep_session,
)
from worker.webhooks.base import AttemptLog, AttemptResult, Route
from worker.webhooks.policy import Delivered

NAME = "pgqueue"
ENDPOINT = "http://127.0.0.1:9/bench"


@dataclass(frozen=True, kw_only=True)
class Options:
    database: str = "postgresql://postgres@127.0.0.1:5432/postgres"  # its server: both DBs
    jobs: int = 2000  # per path and round
    consumers: int = 4  # concurrent claim-and-complete loops, each its own connection
    batch: tuple[int, ...] = (1, 32)  # rows per claim for the store's paths
    rounds: int = 3
    lean_reset: bool = False  # also each path at the smallest batch with the store's own
    #   pool reset (keep_session, no reset query); the others keep asyncpg's default reset,
    #   the store's before it, so the two are compared in one run


DEFAULT = Options()
QUICK = Options(jobs=60, consumers=2, batch=(1, 8), rounds=1)


@dataclass(kw_only=True)
class Phase:
    """One path in one round: the enqueue and the drain, timed apart."""

    jobs: int
    enqueue_seconds: float
    drain_seconds: float
    statements: int = 0  # sent by the store during the drain (0: not counted)
    kinds: dict[str, int] = field(default_factory=dict)  # those statements, by their start

    @property
    def rate(self) -> float:
        return self.jobs / self.drain_seconds

    @property
    def enqueue_rate(self) -> float:
        return self.jobs / self.enqueue_seconds if self.enqueue_seconds else float("nan")


# --------------------------------------------------------------------------- ours


class Counted:
    """Statements the store's pool sends (asyncpg's query logger on every connection)."""

    def __init__(self) -> None:
        self.n = 0
        self.kinds: Counter[str] = Counter()

    async def init(self, conn: asyncpg.Connection) -> None:
        conn.add_query_logger(self._seen)

    def _seen(self, record: Any) -> None:
        self.n += 1
        self.kinds[" ".join(record.query.split())[:48]] += 1

    def since(self, before: Counter[str]) -> dict[str, int]:
        return dict((self.kinds - before).most_common())


async def open_store(url: str, counted: Counted, pool_size: int, *,
                     lean_reset: bool = False) -> PostgresStore:
    """The real ``PostgresStore`` over a pool whose statements are counted; with
    ``lean_reset`` the store's own pool reset (``keep_session``), else asyncpg's default."""
    where = parse_postgres_url(url, None)
    pool = await asyncpg.create_pool(where.dsn(), min_size=1, max_size=pool_size,
                                     timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT,
                                     init=counted.init,
                                     reset=keep_session if lean_reset else None)
    db = Connections(pool, where)
    await db.migrate()
    return PostgresStore(db, f"bench:{uuid.uuid4().hex[:8]}", 30.0)


async def _consumers(consumers: int, step: Callable[[], Awaitable[int]]
                     ) -> tuple[float, int]:
    """``consumers`` loops of ``step`` (how many jobs it finished) until each finds none;
    the wall time of the whole drain and the jobs finished."""
    done = 0

    async def loop() -> None:
        nonlocal done
        while finished := await step():
            done += finished

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(consumers):
            tg.start_soon(loop)
    return time.perf_counter() - started, done


async def _enqueue(consumers: int, items: Sequence[Any],
                   one: Callable[[Any], Awaitable[object]]) -> float:
    """``one(item)`` for every item, ``consumers`` at a time; the wall time."""
    queue = iter(items)

    async def loop() -> None:
        for item in queue:
            await one(item)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(consumers):
            tg.start_soon(loop)
    return time.perf_counter() - started


async def calls_path(store: PostgresStore, counted: Counted, options: Options,
                     batch: int) -> Phase:
    """Track one call at a time; claim and commit them as polls that changed nothing."""
    tag = uuid.uuid4().hex[:8]
    now = time.time()
    new = [NewCall(provider=PROVIDERS[i % 3], call_id=f"{tag}-{i}") for i in range(options.jobs)]
    enqueue = await _enqueue(options.consumers, new, lambda c: store.track(c, now))
    turns = itertools.count()

    async def step() -> int:
        # As the daemon's lanes, one provider per claim; the next step starts at the next
        # provider, so an empty claim happens only when a provider's calls run out.
        at = time.time()
        start = next(turns) % len(PROVIDERS)
        for provider in PROVIDERS[start:] + PROVIDERS[:start]:
            claimed = await store.claim_due_calls(provider, at, batch)
            if claimed:
                await store.apply_poll_results([PollApplied(decision=Decision(call=c.replace(
                    last_polled_at=at, next_poll_at=at + 86_400)))
                    for c in claimed], at)
                return len(claimed)
        return 0

    before, kinds = counted.n, counted.kinds.copy()
    drain, done = await _consumers(options.consumers, step)
    return Phase(jobs=_all_of(options, done), enqueue_seconds=enqueue, drain_seconds=drain,
                 statements=counted.n - before, kinds=counted.since(kinds))


async def deliveries_path(store: PostgresStore, counted: Counted, options: Options,
                          batch: int) -> Phase:
    """Events of ``jobs`` calls, fanned out; claim each delivery and record a 2xx."""
    tag = uuid.uuid4().hex[:8]
    now = time.time()
    await store.track_many([(NewCall(provider=PROVIDERS[i % 3], call_id=f"d{tag}-{i}"), now)
                            for i in range(options.jobs)])
    async with store.db.transaction() as conn:  # as a poll's group commit writes them
        await conn.execute(
            "INSERT INTO events (id, call_pk, type, key, occurred_at, body) SELECT "
            "$1 || c.pk, c.pk, 'call.started', 'started', $2, '\\x7b7d' FROM calls c "
            "WHERE c.call_id LIKE $3", f"e{tag}-", now, f"d{tag}-%")
        # Not polled: these calls only carry events (or the calls path would drain them).
        await conn.execute("UPDATE calls SET next_poll_at = NULL WHERE call_id LIKE $1",
                           f"d{tag}-%")
    def route(_type: str, _url: str | None) -> Sequence[Route]:
        return (Route(endpoint=ENDPOINT),)

    started = time.perf_counter()
    while await store.fan_out(route, time.time(), limit=500):
        pass
    enqueue = time.perf_counter() - started

    async def step() -> int:
        at = time.time()
        claim = await store.claim_due_deliveries(at, free={}, default_free=batch, limit=batch,
                                                 lease_seconds=30.0)
        if not claim.deliveries:
            return 0
        await store.record_attempts([AttemptResult(
            delivery=d, decision=Delivered(),
            attempt=AttemptLog(number=d.attempt, started_at=at, latency=0.001, status=200))
            for d in claim.deliveries], time.time())
        return len(claim.deliveries)

    before, kinds = counted.n, counted.kinds.copy()
    drain, done = await _consumers(options.consumers, step)
    return Phase(jobs=_all_of(options, done), enqueue_seconds=enqueue, drain_seconds=drain,
                 statements=counted.n - before, kinds=counted.since(kinds))


def _all_of(options: Options, done: int) -> int:
    """The jobs a drain finished, which must be exactly the ones enqueued for it."""
    if done != options.jobs:
        raise RuntimeError(f"a drain finished {done} jobs, not the {options.jobs} enqueued")
    return done


# --------------------------------------------------------------------------- procrastinate


@contextlib.asynccontextmanager
async def procrastinate_app(url: str, consumers: int
                            ) -> AsyncIterator[tuple[procrastinate.App, Any]]:
    """An app on its own database with its schema applied, and a no-op task."""
    connector = procrastinate.PsycopgConnector(conninfo=url, min_size=1,
                                               max_size=consumers + 1)
    app = procrastinate.App(connector=connector)

    @app.task(name="bench_noop", queue="bench")
    async def noop(n: int) -> None:  # never run: the benchmark fetches and finishes itself
        del n

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        yield app, noop


async def procrastinate_path(app: procrastinate.App, task: Any, options: Options) -> Phase:
    """``defer_async`` one job at a time; ``fetch_job`` + ``finish_job`` until empty."""
    enqueue = await _enqueue(options.consumers, range(options.jobs),
                             lambda n: task.defer_async(n=n))
    manager = app.job_manager
    workers = [await manager.register_worker() for _ in range(options.consumers)]
    ids = iter(workers)

    done = 0

    async def drain_one(worker_id: int) -> None:
        nonlocal done
        while (job := await manager.fetch_job(queues=None, worker_id=worker_id)) is not None:
            await manager.finish_job(job, status=Status.SUCCEEDED, delete_job=False)
            done += 1

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(options.consumers):
            tg.start_soon(drain_one, next(ids))
    drain = time.perf_counter() - started
    for worker_id in workers:
        await manager.unregister_worker(worker_id)
    return Phase(jobs=_all_of(options, done), enqueue_seconds=enqueue, drain_seconds=drain)


# --------------------------------------------------------------------------- the run


async def _measure(options: Options) -> Report:
    counted = Counted()
    async with fresh_database(options.database, "cw_bench_ours") as ours_url, \
            fresh_database(options.database, "cw_bench_proc") as proc_url, \
            procrastinate_app(proc_url, options.consumers) as (app, task):
        store = await open_store(ours_url, counted, options.consumers + 1)
        lean = await open_store(ours_url, counted, options.consumers + 1, lean_reset=True)
        try:
            paths: dict[str, Callable[[], Awaitable[Phase]]] = {
                "procrastinate": lambda: procrastinate_path(app, task, options)}
            for batch in options.batch:
                paths[f"calls x{batch}"] = (
                    lambda b=batch: calls_path(store, counted, options, b))  # type: ignore[misc]
                paths[f"deliveries x{batch}"] = (
                    lambda b=batch: deliveries_path(store, counted, options, b))  # type: ignore[misc]
            if options.lean_reset:
                b = min(options.batch)
                paths[f"calls x{b} lean reset"] = lambda: calls_path(lean, counted, options, b)
                paths[f"deliveries x{b} lean reset"] = (
                    lambda: deliveries_path(lean, counted, options, b))
            rounds: list[dict[str, Phase]] = []
            for r in range(options.rounds):
                order = list(paths) if r % 2 == 0 else list(reversed(paths))
                rounds.append({name: await paths[name]() for name in order})
        finally:
            await store.close()
            await lean.close()
    return _report(options, rounds)


def _report(options: Options, rounds: list[dict[str, Phase]]) -> Report:
    names = list(rounds[0])
    rate = {n: statistics.median(r[n].rate for r in rounds) for n in names}
    enqueue = {n: statistics.median(r[n].enqueue_rate for r in rounds) for n in names}
    of_peer = {n: statistics.median(r[n].rate / r["procrastinate"].rate for r in rounds)
               for n in names}
    per_job = {n: statistics.median(r[n].statements / r[n].jobs for r in rounds)
               for n in names if n != "procrastinate"}
    table = Table(
        title=f"claim + complete, {options.jobs} jobs per path and round, "
              f"{options.consumers} consumers, medians of {options.rounds} rounds",
        columns=("path", "jobs/s", "of procrastinate", "statements/job", "enqueue jobs/s"),
        rows=[(n, rate[n], of_peer[n], per_job[n] if n != "procrastinate" else "-",
               enqueue[n]) for n in names])
    per_round = Table(title="jobs/s per round", columns=("round", *names),
                      rows=[(i, *(r[n].rate for n in names)) for i, r in enumerate(rounds, 1)])
    last = rounds[-1]
    kinds = Table(title="the store's statements per job during the drain, by kind (last round)",
                  columns=("path", "statement", "per job"),
                  rows=[(n, kind, count / last[n].jobs) for n in names
                        for kind, count in list(last[n].kinds.items())[:8]])
    notes = ["statements/job: what the store's connections sent (each a round trip), BEGIN, "
             "COMMIT and the pool's reset query on release included; procrastinate's are not "
             "counted: fetch_job and finish_job are one SQL function call each, each its own "
             "transaction, taken from a psycopg pool that checks the connection first",
             "enqueue: procrastinate defer_async and the store's track are one job per call; "
             "deliveries are fanned out in batches of 500 (not a peer of defer)"]
    return Report(name=NAME, params=asdict(options), tables=[table, per_round, kinds], notes=notes,
                  results={"jobs_per_s": rate, "of_procrastinate": of_peer,
                           "statements_per_job": per_job, "enqueue_per_s": enqueue,
                           "rounds": [{n: {**asdict(p), "rate": p.rate} for n, p in r.items()}
                                      for r in rounds]})


def measure(options: Options) -> Report:
    return asyncio.run(_measure(options))


def main(argv: Sequence[str] | None = None) -> int:
    return cli(NAME, __doc__, default=DEFAULT, quick=QUICK, measure=measure, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
