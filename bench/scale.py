"""The real daemon with 10 000 and 100 000 tracked calls: schedule lag, memory, CPU, disk.

For each size, in a fresh directory: the simulator (its own process) gets that many calls;
the same calls go straight into a new database through ``SQLiteStore.track_many``; then
``python -m worker --config FILE run`` (the daemon exactly as systemd starts it, relay
included) polls them for ``seconds``. A size of 0 is the baseline: the same daemon idle.

* The due rate is the same at every size (``rate`` polls/s): the poll interval is
  ``calls / rate`` and the first polls are spread evenly over one interval, so what differs
  between sizes is only how many calls the database holds. Mostly long-lived calls: all wait
  for someone to join for the whole run (a poll that changes nothing, like most polls of a
  long call) except one in ``ends_every``, which has ended with a recording ready (four
  events, one extra GET for Ultravox, then terminal), so the outbox and relay work too.
* Schedule lag = when the poll's answer was reconciled (``last_polled_at``) minus when the
  poll was due. A trigger the benchmark adds to its copy of the schema records both for
  every poll, so the daemon is measured without instrumenting its code.
* Memory: ``VmRSS`` sampled from /proc every 0.25 s and ``VmHWM`` (the kernel's peak) just
  before the stop. SQLite's page cache is bounded (``cache_size``, 16 MB), so RSS should
  differ between sizes by at most that: calls live in the database, not in memory.
* CPU per poll: the daemon's user + system time over the window, divided by its polls.
* Database size: after the insert, and after the run (the benchmark's table dropped,
  vacuumed), bytes per tracked call.
* ``--transport httpx,aiohttp``: the daemon over each HTTP transport (``worker.http_aio``,
  via ``CALLWATCH_HTTP_TRANSPORT``), alternated at every size and round.
* ``--bare``: after each daemon run, in this process, the same GETs at the same pace
  (``rate`` per second, each in its own task, as the scheduler starts them) for ``seconds``:
  with the daemon's client over the same transport, then with a plain ``aiohttp``
  session. CPU per request of each, and the daemon's CPU per poll over each.

With ``--database postgresql://...`` (a role that may create databases) each size gets a
fresh database on that server, created and dropped here, seeded by one COPY (the calls and
their due times, as ``track_many`` would write them; a million ``track`` transactions would
measure the seeding, not the daemon), and the lag trigger is a PL/pgSQL one. ``--workers N``
(several values: each in turn, alternated by round) starts N daemons on that database; RSS is
then per worker (the largest), CPU the workers' sum, and the server's backends serving the
database are measured too. ``--saturate`` makes every call due again 1 ms after its poll, so
polls/s is what the workers can do, not ``rate``: how two workers compare with one.

Both go together: runs are keyed by (calls, workers, transport), every combination once a
round (in reverse order on odd rounds); ``--bare`` reads the call ids from whichever
database the run used.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import asyncpg

from bench import pgtools
from bench.common import (
    Report,
    Sim,
    Table,
    add_sim_calls,
    cli,
    cpu_seconds,
    live_scripts,
    percentile,
    rss_kib,
    simulator,
    write_config,
)
from bench.polling import capture_targets, kinds_of
from worker.config import Config, load
from worker.daemon import http_client
from worker.database_url import parse_postgres_url
from worker.demo import start_daemon, stop_daemon
from worker.http_aio import ENV, Kind
from worker.store.base import NewCall
from worker.store.postgres import PostgresStore
from worker.store.sqlite import SQLiteStore

NAME = "scale"
_LAG_SCHEMA = (
    "CREATE TABLE bench_polls (due REAL, polled REAL);"
    "CREATE TRIGGER bench_poll AFTER UPDATE OF last_polled_at ON calls"
    " WHEN new.last_polled_at IS NOT old.last_polled_at"
    " BEGIN INSERT INTO bench_polls VALUES (old.next_poll_at, new.last_polled_at); END;"
)


@dataclass(frozen=True, kw_only=True)
class Options:
    sizes: tuple[int, ...] = (10_000, 100_000, 0)
    rate: float = 200.0  # due polls per second, at every size
    seconds: float = 30.0  # measured window per size
    lead: float = 4.0  # from the insert's end to the first due poll: the daemon starts
    ends_every: int = 20  # one call in this many has ended (events, recording, terminal)
    rounds: int = 1  # > 1: the sizes again, in reverse order, and medians
    transport: str = "httpx"  # the daemon's HTTP transport(s), comma-separated, alternated
    bare: bool = False  # also the bare paced loops (same client; plain aiohttp) per run;
    # with --compare: a paced loop of the daemon's client as a third code, no daemon
    database: str = ""  # a postgresql:// URL: a fresh database per size on that server
    workers: tuple[int, ...] = (1,)  # daemons sharing the database (PostgreSQL for > 1)
    saturate: bool = False  # due again 1 ms after each poll: polls/s is the capacity
    compare: str = ""  # a git ref: its worktree's daemon alternated with ours (``_compare``)
    rates: tuple[int, ...] = ()  # with --compare: rising due rates (default: ``rate`` alone)


DEFAULT = Options()
QUICK = Options(sizes=(0, 2_000), rate=50.0, seconds=3.0, lead=2.0)


@dataclass(kw_only=True)
class Run:
    """One size, one round: what the daemon did and cost."""

    calls: int
    workers: int = 1
    transport: str = "httpx"
    bare_cpu_ms: float | None = None  # the same client and transport at the same pace
    aiohttp_cpu_ms: float | None = None  # a plain aiohttp session at the same pace
    polls: int = 0
    overdue: int = 0  # polls due before the window's end that had not been made by then
    lag: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    rss_start_kib: int = 0
    rss_max_kib: int = 0
    hwm_kib: int = 0
    db_insert_bytes: int = 0
    db_after_bytes: int = 0
    insert_seconds: float = 0.0
    counts_seconds: float = 0.0  # one store.counts() on the fresh database
    late_start: float = 0.0  # the daemons were ready this long after the first polls were due
    sim_cpu_seconds: float = 0.0
    db_cpu_seconds: float = 0.0  # PostgreSQL's backends serving the database (0 on SQLite)
    runq_wait_seconds: float = 0.0  # the workers' threads runnable, waiting for a CPU

    def summary(self, seconds: float) -> dict[str, Any]:
        """The figures, in the units of the report (ms, MiB), for a ``seconds`` window."""
        per_poll = 1000 * self.cpu_seconds / self.polls if self.polls else None
        return {
            "calls": self.calls, "workers": self.workers,
            "transport": self.transport,
            "bare_cpu_ms": self.bare_cpu_ms, "aiohttp_cpu_ms": self.aiohttp_cpu_ms,
            "over_bare": per_poll / self.bare_cpu_ms if per_poll and self.bare_cpu_ms
            else None,
            "over_aiohttp": per_poll / self.aiohttp_cpu_ms if per_poll and self.aiohttp_cpu_ms
            else None,
            "polls": self.polls, "overdue_at_end": self.overdue,
            "polls_per_s": self.polls / seconds,
            "lag_p50_ms": 1000 * percentile(self.lag, 50),
            "lag_p99_ms": 1000 * percentile(self.lag, 99),
            "lag_max_ms": 1000 * max(self.lag, default=float("nan")),
            "cpu_ms_per_poll": 1000 * self.cpu_seconds / self.polls if self.polls else None,
            "cpu_share": self.cpu_seconds / seconds,
            "rss_start_mib": self.rss_start_kib / 1024, "rss_max_mib": self.rss_max_kib / 1024,
            "peak_rss_mib": self.hwm_kib / 1024,
            "db_insert_mib": self.db_insert_bytes / 2**20,
            "db_after_mib": self.db_after_bytes / 2**20,
            "db_bytes_per_call": self.db_after_bytes / self.calls if self.calls else None,
            "insert_seconds": self.insert_seconds,
            "counts_ms": 1000 * self.counts_seconds,
            "late_start_s": self.late_start,
            "sim_cpu_share": self.sim_cpu_seconds / seconds,
            "db_cpu_share": self.db_cpu_seconds / seconds,
            "runq_wait_share": self.runq_wait_seconds / seconds,
        }


# --------------------------------------------------------------------------- one size


async def _prepare(workdir: Path, sim: Sim, options: Options, calls: int,
                   database: str | None) -> tuple[Run, float]:
    """Calls in the simulator and the database; return the run and the first due time."""
    run = Run(calls=calls)
    scripts = live_scripts(calls, lasts=1.0, ends_every=options.ends_every, waiting=True)
    await add_sim_calls(sim, scripts)
    spread = 0.0 if options.saturate else max(calls, 1) / options.rate
    if database:
        # After the COPY (about 100 000 rows/s, counted at half that) and the daemons' start.
        first_due = time.time() + calls / 50_000 + options.lead
        await _prepare_pg(database, run, [
            (s["provider"], s["call_id"], first_due + i * spread / calls)
            for i, s in enumerate(scripts)])
        return run, first_due
    # After the insert (about 40 000 calls/s, counted at half that) and the daemon's start.
    first_due = time.time() + calls / 20_000 + options.lead
    store = await SQLiteStore.open(workdir / "callwatch.db")
    try:
        started = time.perf_counter()
        for i in range(0, calls, 10_000):
            await store.track_many([
                (NewCall(provider=s["provider"], call_id=s["call_id"]),
                 first_due + (i + k) * spread / calls)
                for k, s in enumerate(scripts[i:i + 10_000])])
        run.insert_seconds = time.perf_counter() - started
        started = time.perf_counter()
        await store.counts()  # what `status`, the metrics and STATUS= lines ask for
        run.counts_seconds = time.perf_counter() - started
    finally:
        await store.close()
    with sqlite3.connect(workdir / "callwatch.db") as db:
        db.executescript(_LAG_SCHEMA)
    run.db_insert_bytes = _db_bytes(workdir / "callwatch.db")
    return run, first_due


async def _prepare_pg(database: str, run: Run, calls: list[tuple[str, str, float]]) -> None:
    """The schema by the store's own migrations, the calls by one COPY, the lag trigger."""
    store = await PostgresStore.open(parse_postgres_url(database, None), pool_size=2)
    try:
        started = time.perf_counter()
        await pgtools.seed_calls(database, calls)
        run.insert_seconds = time.perf_counter() - started
        started = time.perf_counter()
        await store.counts()
        run.counts_seconds = time.perf_counter() - started
    finally:
        await store.close()
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(pgtools.LAG_SCHEMA)
        run.db_insert_bytes = await conn.fetchval(
            "SELECT pg_database_size(current_database())")
    finally:
        await conn.close()


def _db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def _wait_ready(log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if log.exists() and '"daemon.ready"' in log.read_text(errors="replace"):
            return
        await anyio.sleep(0.05)
    raise RuntimeError(f"the daemon did not get ready; see {log}")


async def _watch(pids: Sequence[int], run: Run, until: float) -> None:
    """Sample the daemons' RSS until ``until`` (monotonic); keep the largest."""
    while time.monotonic() < until:
        run.rss_max_kib = max([run.rss_max_kib, *(rss_kib(pid)[0] for pid in pids)])
        await anyio.sleep(0.25)


@contextlib.asynccontextmanager
async def _database(options: Options) -> AsyncIterator[str | None]:
    """A fresh PostgreSQL database for one size (dropped after), or None: a SQLite file."""
    if not options.database:
        yield None
        return
    async with pgtools.fresh_database(options.database) as url:
        yield url


def _use_database(config: Path, database: str) -> None:
    """Point the benchmark's config at ``database`` instead of its SQLite file."""
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace('database = "callwatch.db"', f'database = "{database}"'),
                      encoding="utf-8")


async def _one(options: Options, calls: int, workers: int = 1,
               kind: Kind = "httpx", tree: Path | None = None) -> Run:
    """One size, one round; ``tree``: a ``--compare`` worktree whose daemon runs instead."""
    if workers > 1 and not options.database:
        raise ValueError("several workers share a PostgreSQL database: give --database URL")
    with tempfile.TemporaryDirectory(prefix="callwatch-bench-") as tmp:
        workdir = Path(tmp)
        async with simulator(workdir) as sim, _database(options) as database:
            run, first_due = await _prepare(workdir, sim, options, calls, database)
            run.workers, run.transport = workers, kind
            interval = 0.001 if options.saturate else max(calls, 1) / options.rate
            config, env = write_config(workdir, sim, tracking={
                "poll_interval": interval, "pending_poll_interval": interval})
            env = {**env, ENV: kind}
            if database:
                _use_database(config, database)
            procs = [_start(config, env, workdir / f"daemon{i}.log", tree)
                     for i in range(workers)]
            pids = [proc.pid for proc in procs]
            try:
                for i in range(workers):
                    await _wait_ready(workdir / f"daemon{i}.log", time.monotonic() + 120)
                run.late_start = max(0.0, time.time() - first_due)
                # Saturated: past the first burst, into the steady state.
                await anyio.sleep(max(0.0, first_due - time.time())
                                  + (2.0 if options.saturate else 0.0))
                window = (time.time(), time.time() + options.seconds)
                run.rss_start_kib = max(rss_kib(pid)[0] for pid in pids)
                cpu0, sim0 = sum(map(cpu_seconds, pids)), sim.cpu_seconds()
                wait0 = sum(map(pgtools.runqueue_wait, pids))
                db0 = pgtools.backends_cpu(await pgtools.backend_pids(database)) \
                    if database else {}
                await _watch(pids, run, time.monotonic() + options.seconds)
                run.cpu_seconds = sum(map(cpu_seconds, pids)) - cpu0
                run.sim_cpu_seconds = sim.cpu_seconds() - sim0
                run.runq_wait_seconds = sum(map(pgtools.runqueue_wait, pids)) - wait0
                if database:
                    seen = {*db0, *await pgtools.backend_pids(database)}
                    run.db_cpu_seconds = pgtools.cpu_between(db0, pgtools.backends_cpu(seen))
                run.hwm_kib = max(rss_kib(pid)[1] for pid in pids)
            finally:
                codes = _stop_all(procs)
            if any(codes):
                raise RuntimeError(f"a daemon exited {codes}; see {workdir}/daemon*.log")
            if options.bare and calls:
                await _bare_runs(run, load(config, env), database or workdir / "callwatch.db",
                                 options)
            if database:
                await _collect_pg(database, run, window)
        if not database:
            _collect(workdir / "callwatch.db", run, window)
    return run


def _stop_all(procs: Sequence[subprocess.Popen[bytes]]) -> list[int]:
    """SIGTERM to every daemon at once (the window is over), then wait for each."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(30))
        except subprocess.TimeoutExpired:
            codes.append(stop_daemon(proc))  # SIGKILL if it will not go
    return codes


async def _bare_runs(run: Run, config: Config, db: Path | str, options: Options) -> None:
    """The daemon's GETs at the daemon's pace: its client, then a plain aiohttp session.
    ``db``: the SQLite file or the PostgreSQL URL the daemon ran on, for the call ids."""
    # The ended calls (live_scripts: every ends_every-th, in insertion order) go last, since
    # capture_targets takes each provider's URL from its first call, and an ended call's
    # last request is its recording (a redirect), not the call.
    every = max(1, options.ends_every)  # 1: no call has ended, all in pk order
    query = "SELECT provider, call_id FROM calls ORDER BY (pk - 1) % {} = 0, pk"
    if isinstance(db, str):
        conn = await asyncpg.connect(db)
        try:
            ids = [{"provider": p, "call_id": c}
                   for p, c in await conn.fetch(query.format("$1"), every)]
        finally:
            await conn.close()
    else:
        with sqlite3.connect(db) as lite:
            ids = [{"provider": p, "call_id": c}
                   for p, c in lite.execute(query.format("?"), (every,))]
    async with http_client(config, kinds_of(run.transport)[0]) as client:
        targets = await capture_targets(client, config, ids)
        work = [(url, headers) for urls, headers in targets.values() for url in urls]

        async def with_client(url: str, headers: dict[str, str]) -> None:
            (await client.get(url, headers=headers)).raise_for_status()

        run.bare_cpu_ms = await _paced(with_client, work, options)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit_per_host=160),
                                     ) as session:
        async def plain(url: str, headers: dict[str, str]) -> None:
            async with session.get(url, headers=headers) as reply:
                reply.raise_for_status()
                await reply.read()

        run.aiohttp_cpu_ms = await _paced(plain, work, options)


async def _paced(get: Callable[[str, dict[str, str]], Awaitable[None]],
                 work: Sequence[tuple[str, dict[str, str]]], options: Options) -> float:
    """``rate`` GETs a second, each in a task of its own, 1 s of warm-up then ``seconds``
    measured: this process's CPU ms per request."""
    done = 0

    async def one(url: str, headers: dict[str, str]) -> None:
        nonlocal done
        await get(url, headers)
        done += 1

    start = time.perf_counter()
    measured = (0, 0.0)
    async with anyio.create_task_group() as tg:
        for i in itertools.count():
            due = start + i / options.rate
            if due >= start + 1.0 + options.seconds:
                break
            if i == int(options.rate) and not measured[1]:
                measured = (done, time.process_time())
            await anyio.sleep(max(0.0, due - time.perf_counter()))
            tg.start_soon(one, *work[i % len(work)])
    cpu = time.process_time() - measured[1]
    return 1000 * cpu / max(1, done - measured[0])


def _collect(path: Path, run: Run, window: tuple[float, float]) -> None:
    """Lag of the polls made in the window, the backlog at its end; then the database
    without the benchmark's table, vacuumed."""
    start, end = window
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT due, polled FROM bench_polls WHERE polled BETWEEN ? AND ?",
                          (start, end)).fetchall()
        late = db.execute("SELECT COUNT(*) FROM bench_polls WHERE due < ? AND polled > ?",
                          (end, end)).fetchone()[0]
        waiting = db.execute("SELECT COUNT(*) FROM calls WHERE next_poll_at < ?",
                             (end,)).fetchone()[0]
        db.executescript("DROP TRIGGER bench_poll; DROP TABLE bench_polls;")
    with sqlite3.connect(path) as db:
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    run.polls = len(rows)
    run.lag = [polled - due for due, polled in rows]
    run.overdue = late + waiting
    run.db_after_bytes = _db_bytes(path)


async def _collect_pg(database: str, run: Run, window: tuple[float, float]) -> None:
    """As ``_collect``, on PostgreSQL (a plain VACUUM: the size is what a live one holds)."""
    start, end = window
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch("SELECT due, polled FROM bench_polls "
                                "WHERE polled BETWEEN $1 AND $2", start, end)
        late = await conn.fetchval("SELECT COUNT(*) FROM bench_polls WHERE due < $1 "
                                   "AND polled > $1", end)
        waiting = await conn.fetchval("SELECT COUNT(*) FROM calls WHERE next_poll_at < $1",
                                      end)
        await conn.execute(pgtools.DROP_LAG_SCHEMA)
        await conn.execute("VACUUM")
        run.db_after_bytes = await conn.fetchval("SELECT pg_database_size(current_database())")
    finally:
        await conn.close()
    run.polls = len(rows)
    run.lag = [polled - due for due, polled in rows]
    run.overdue = late + waiting


# --------------------------------------------------------------------------- report


def _kinds(options: Options) -> tuple[Kind, ...]:
    return tuple(kinds_of(options.transport))


async def _measure(options: Options) -> Report:
    runs: list[Run] = []
    combos = [(calls, workers, kind) for calls in options.sizes
              for workers in options.workers for kind in _kinds(options)]
    for r in range(options.rounds):
        for calls, workers, kind in combos if r % 2 == 0 else reversed(combos):
            runs.append(await _one(options, calls, workers, kind))
    return _report(options, runs)


def _median_summary(options: Options, runs: Sequence[Run], calls: int,
                    workers: int, kind: str) -> dict[str, Any]:
    found = [run.summary(options.seconds) for run in runs
             if run.calls == calls and run.workers == workers and run.transport == kind]
    out: dict[str, Any] = {}
    for key, value in found[0].items():
        values = [f[key] for f in found if f[key] is not None]
        out[key] = statistics.median(values) if values and isinstance(value, float) else value
    return out


def _report(options: Options, runs: list[Run]) -> Report:
    kinds = _kinds(options)
    several = len(kinds) > 1
    keys = [(calls, workers, kind)
            for calls, workers in sorted({(c, w) for c in options.sizes for w in options.workers})
            for kind in kinds]
    summaries = {key: _median_summary(options, runs, *key) for key in keys}
    rows = []
    for calls, workers, kind in keys:
        s = summaries[(calls, workers, kind)]
        base = summaries.get((0, workers, kind))
        extra = s["peak_rss_mib"] - base["peak_rss_mib"] if base else float("nan")
        rows.append((calls, workers, *((kind,) if several else ()), s["polls_per_s"],
                     s["overdue_at_end"], s["lag_p50_ms"],
                     s["lag_p99_ms"], s["lag_max_ms"], s["peak_rss_mib"],
                     extra, s["cpu_ms_per_poll"] or float("nan"), s["cpu_share"],
                     s["runq_wait_share"], s["sim_cpu_share"], s["db_cpu_share"],
                     s["db_after_mib"],
                     s["counts_ms"], s["insert_seconds"], s["late_start_s"]))
    rate = "every call due 1 ms after its poll" if options.saturate else \
        f"{options.rate:g} due polls/s at every size"
    table = Table(title=f"the daemon on {'PostgreSQL' if options.database else 'SQLite'}, "
                        f"{rate}, {options.seconds:g} s window",
                  columns=("calls", "workers", *(("transport",) if several else ()),
                           "polls/s", "overdue at end", "lag p50 ms",
                           "lag p99 ms", "lag max ms", "peak RSS MiB (per worker)",
                           "RSS - idle MiB", "cpu ms/poll", "cpu (cores)", "waiting for a cpu",
                           "sim cpu",
                           "db cpu", "db MiB", "counts() ms", "seed s", "late start s"),
                  rows=rows)
    tables = [table]
    if options.bare:
        tables.append(Table(
            title=f"CPU per request at {options.rate:g}/s (medians): the daemon against bare "
                  "loops at the same pace",
            columns=("calls", "workers", "transport", "daemon ms/poll",
                     "bare same client ms/req", "daemon/bare", "bare aiohttp ms/req",
                     "daemon/bare aiohttp"),
            rows=[(*key, summaries[key]["cpu_ms_per_poll"] or float("nan"),
                   *(summaries[key][k] or float("nan")
                     for k in ("bare_cpu_ms", "over_bare", "aiohttp_cpu_ms", "over_aiohttp")))
                  for key in keys if key[0]]))
    notes = [f"poll interval = calls / {options.rate:g} (e.g. {100_000 / options.rate:g} s at "
             f"100 000 calls); aims: p99 lag < 1000 ms and peak RSS < 150 MiB at 100 000"]
    return Report(name=NAME, params=asdict(options), tables=tables, notes=notes,
                  results={"by_size": {(str(c) if w == 1 else f"{c}x{w}")
                                       + (f":{k}" if several else ""): v
                                       for (c, w, k), v in summaries.items()},
                           "runs": [run.summary(options.seconds) for run in runs]})


# --------------------------------------------------------------------------- --compare REF

TREE = Path(__file__).resolve().parent.parent


def _start(config: Path, env: dict[str, str], log: Path,
           tree: Path | None) -> subprocess.Popen[bytes]:
    """The daemon of ``tree`` (its own ``worker`` package first on the path), or ours."""
    if tree is None:
        return start_daemon(config, env, log)
    path = os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH", "")) if p)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "worker", "--config", str(config), "run"], cwd=tree,
            env={**os.environ, **env, "PYTHONPATH": path}, stdout=out, stderr=subprocess.STDOUT)


def _check_tree(tree: Path) -> None:
    """Refuse to measure if ``_start`` would not import ``tree``'s code."""
    done = subprocess.run(
        [sys.executable, "-c", "import worker; print(worker.__file__)"], cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True, check=True)
    if Path(done.stdout.strip()).parent.parent.resolve() != tree.resolve():
        raise RuntimeError(f"{tree} would run {done.stdout.strip()}")


async def _bare(options: Options, calls: int) -> dict[str, Any]:
    """The baseline of ``--bare``: the daemon's own HTTP client (``daemon.http_client``, same
    URLs and headers as its adapters send) in one loop per provider, each GET at its due time,
    ``rate`` GETs/s in all, no scheduler and no store: the script a user would write."""
    from bench.polling import quiet_logs

    with tempfile.TemporaryDirectory(prefix="callwatch-bench-") as tmp:
        workdir = Path(tmp)
        async with simulator(workdir) as sim:
            scripts = live_scripts(calls, lasts=1.0, ends_every=options.ends_every,
                                   waiting=True)
            await add_sim_calls(sim, scripts)
            path, env = write_config(workdir, sim, tracking={})
            config = load(path, env)
            quiet_logs("warning")
            async with http_client(config, _kinds(options)[0]) as client:
                targets = await capture_targets(client, config, scripts)
                done = 0
                step = len(targets) / options.rate

                async def paced(urls: list[str], headers: dict[str, str], at: float) -> None:
                    nonlocal done
                    for url in itertools.cycle(urls):
                        if (delay := at - time.monotonic()) > 0:
                            await anyio.sleep(delay)
                        reply = await client.get(url, headers=headers)
                        if reply.status_code != 200:
                            raise RuntimeError(f"bare GET {url}: HTTP {reply.status_code}")
                        done += 1
                        at += step

                async with anyio.create_task_group() as tg:
                    start = time.monotonic()
                    for k, (urls, headers) in enumerate(targets.values()):
                        tg.start_soon(paced, urls, headers, start + k * step / len(targets))
                    await anyio.sleep(options.lead)
                    n0, c0, t0 = done, time.process_time(), time.monotonic()
                    await anyio.sleep(options.seconds)
                    n1, c1, t1 = done, time.process_time(), time.monotonic()
                    tg.cancel_scope.cancel()
    polls = n1 - n0
    return {"calls": calls, "polls": polls, "polls_per_s": polls / (t1 - t0),
            "cpu_ms_per_poll": 1000 * (c1 - c0) / polls if polls else None,
            "cpu_share": (c1 - c0) / (t1 - t0)}


def _compare(options: Options) -> Report:
    """Our daemon against a ``git worktree`` of ``options.compare``, alternated: for each
    round, each rate (rising) and size, the codes in turn (the order reversed every round),
    and with ``--bare`` the paced client loop beside them."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-compare-"))
    old = workdir / "old"
    subprocess.run(["git", "-C", str(TREE), "worktree", "add", "--detach", str(old),
                    options.compare], check=True, capture_output=True)
    try:
        trees: dict[str, Path | None] = {f"old ({options.compare})": old,
                                         "new (working tree)": TREE}
        for tree in trees.values():
            assert tree is not None
            _check_tree(tree)
        if options.bare:
            trees = {"bare loop": None, **trees}
        runs = anyio.run(_compare_runs, options, trees)
    finally:
        subprocess.run(["git", "-C", str(TREE), "worktree", "remove", "--force",
                        str(old)], check=False, capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return _compare_report(options, list(trees), runs)


async def _compare_runs(options: Options, trees: dict[str, Path | None]
                        ) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    codes = list(trees.items())
    for r in range(options.rounds):
        for rate in options.rates or (int(options.rate),):
            for calls in [c for c in options.sizes if c > 0]:
                for label, tree in codes if r % 2 == 0 else reversed(codes):
                    at = replace(options, rate=float(rate))
                    if label == "bare loop":
                        found = await _bare(at, calls)
                    else:
                        found = (await _one(replace(at, bare=False), calls,
                                            kind=_kinds(options)[0], tree=tree)
                                 ).summary(options.seconds)
                    runs.append({"round": r, "rate": rate, "code": label, **found})
                    print(f"round {r} rate {rate} {label}: "
                          f"{found['polls_per_s']:.0f} polls/s, "
                          f"{found.get('lag_p99_ms', float('nan')):.0f} ms p99 lag, "
                          f"{found['cpu_ms_per_poll'] or float('nan'):.2f} ms CPU/poll",
                          file=sys.stderr, flush=True)
    return runs


def _compare_report(options: Options, codes: list[str], runs: list[dict[str, Any]]) -> Report:
    def med(found: list[dict[str, Any]], key: str) -> float:
        values = [f[key] for f in found if f.get(key) is not None]
        return statistics.median(values) if values else float("nan")

    rows = []
    capacity: dict[str, float] = {}
    for rate in options.rates or (int(options.rate),):
        bare = {f["round"]: f["cpu_ms_per_poll"] for f in runs
                if f["rate"] == rate and f["code"] == "bare loop" and f["cpu_ms_per_poll"]}
        for code in codes:
            found = [f for f in runs if f["rate"] == rate and f["code"] == code]
            ratios = [f["cpu_ms_per_poll"] / bare[f["round"]] for f in found
                      if f["round"] in bare and f["cpu_ms_per_poll"]]
            rows.append((rate, code, med(found, "polls_per_s"), med(found, "lag_p50_ms"),
                         med(found, "lag_p99_ms"), med(found, "lag_max_ms"),
                         med(found, "overdue_at_end"), med(found, "cpu_ms_per_poll"),
                         statistics.median(ratios) if ratios else float("nan"),
                         med(found, "cpu_share")))
            if (code != "bare loop" and med(found, "lag_p99_ms") < 1000
                    and med(found, "polls_per_s") >= 0.95 * rate):
                capacity[code] = max(capacity.get(code, 0.0), rate)
    table = Table(title=f"old and new code alternated, {options.rounds} rounds, medians; "
                        f"{options.seconds:g} s windows at {','.join(map(str, options.sizes))} "
                        f"calls",
                  columns=("rate", "code", "polls/s", "lag p50 ms", "lag p99 ms", "lag max ms",
                           "overdue", "cpu ms/poll", "of bare", "cpu (cores)"),
                  rows=rows)
    notes = [f"capacity (highest rate with p99 lag < 1000 ms and >= 95 % of it done): {capacity}",
             "'of bare': median over rounds of CPU per poll / the bare loop's in that round"]
    return Report(name=NAME, params=asdict(options), tables=[table], notes=notes,
                  results={"capacity": capacity, "runs": runs})


def measure(options: Options) -> Report:
    if options.compare:
        return _compare(options)
    return anyio.run(_measure, options)


def main(argv: Sequence[str] | None = None) -> int:
    return cli(NAME, __doc__, default=DEFAULT, quick=QUICK, measure=measure, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

