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
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio

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
from worker.demo import start_daemon, stop_daemon
from worker.store.base import NewCall
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
    compare: str = ""  # a git ref: its worktree's daemon alternated with ours (``_compare``)
    rates: tuple[int, ...] = ()  # with --compare: rising due rates (default: ``rate`` alone)
    bare: bool = False  # with --compare: also a paced loop of the daemon's client, no daemon


DEFAULT = Options()
QUICK = Options(sizes=(0, 2_000), rate=50.0, seconds=3.0, lead=2.0)


@dataclass(kw_only=True)
class Run:
    """One size, one round: what the daemon did and cost."""

    calls: int
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

    def summary(self, seconds: float) -> dict[str, Any]:
        """The figures, in the units of the report (ms, MiB), for a ``seconds`` window."""
        return {
            "calls": self.calls, "polls": self.polls, "overdue_at_end": self.overdue,
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
        }


# --------------------------------------------------------------------------- one size


async def _prepare(workdir: Path, sim: Sim, options: Options, calls: int) -> tuple[Run, float]:
    """Calls in the simulator and the database; return the run and the first due time."""
    run = Run(calls=calls)
    scripts = live_scripts(calls, lasts=1.0, ends_every=options.ends_every, waiting=True)
    await add_sim_calls(sim, scripts)
    interval = max(calls, 1) / options.rate
    # After the insert (about 40 000 calls/s, counted at half that) and the daemon's start.
    first_due = time.time() + calls / 20_000 + options.lead
    store = await SQLiteStore.open(workdir / "callwatch.db")
    try:
        started = time.perf_counter()
        for i in range(0, calls, 10_000):
            await store.track_many([
                (NewCall(provider=s["provider"], call_id=s["call_id"]),
                 first_due + (i + k) * interval / calls)
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


def _db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def _wait_ready(log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if log.exists() and '"daemon.ready"' in log.read_text(errors="replace"):
            return
        await anyio.sleep(0.05)
    raise RuntimeError(f"the daemon did not get ready; see {log}")


async def _watch(pid: int, run: Run, until: float) -> None:
    """Sample the daemon's RSS until ``until`` (monotonic)."""
    while time.monotonic() < until:
        rss, _ = rss_kib(pid)
        run.rss_max_kib = max(run.rss_max_kib, rss)
        await anyio.sleep(0.25)


async def _one(options: Options, calls: int, tree: Path | None = None) -> Run:
    with tempfile.TemporaryDirectory(prefix="callwatch-bench-") as tmp:
        workdir = Path(tmp)
        async with simulator(workdir) as sim:
            run, first_due = await _prepare(workdir, sim, options, calls)
            interval = max(calls, 1) / options.rate
            config, env = write_config(workdir, sim, tracking={
                "poll_interval": interval, "pending_poll_interval": interval})
            proc = _start(config, env, workdir / "daemon.log", tree)
            try:
                await _wait_ready(workdir / "daemon.log", time.monotonic() + 60)
                await anyio.sleep(max(0.0, first_due - time.time()))
                window = (time.time(), time.time() + options.seconds)
                run.rss_start_kib, _ = rss_kib(proc.pid)
                cpu0 = cpu_seconds(proc.pid)
                await _watch(proc.pid, run, time.monotonic() + options.seconds)
                run.cpu_seconds = cpu_seconds(proc.pid) - cpu0
                _, run.hwm_kib = rss_kib(proc.pid)
            finally:
                code = stop_daemon(proc)
            if code != 0:
                raise RuntimeError(f"the daemon exited {code}; see {workdir}/daemon.log")
        _collect(workdir / "callwatch.db", run, window)
    return run


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


# --------------------------------------------------------------------------- report


async def _measure(options: Options) -> Report:
    runs: list[Run] = []
    for r in range(options.rounds):
        sizes = options.sizes if r % 2 == 0 else tuple(reversed(options.sizes))
        for calls in sizes:
            runs.append(await _one(options, calls))
    return _report(options, runs)


def _median_summary(options: Options, runs: Sequence[Run], calls: int) -> dict[str, Any]:
    found = [run.summary(options.seconds) for run in runs if run.calls == calls]
    out: dict[str, Any] = {}
    for key, value in found[0].items():
        values = [f[key] for f in found if f[key] is not None]
        out[key] = statistics.median(values) if values and isinstance(value, float) else value
    return out


def _report(options: Options, runs: list[Run]) -> Report:
    sizes = sorted(set(options.sizes))
    summaries = {calls: _median_summary(options, runs, calls) for calls in sizes}
    base = summaries.get(0)
    rows = []
    for calls in sizes:
        s = summaries[calls]
        extra = s["peak_rss_mib"] - base["peak_rss_mib"] if base else float("nan")
        rows.append((calls, s["polls_per_s"], s["overdue_at_end"], s["lag_p50_ms"],
                     s["lag_p99_ms"], s["lag_max_ms"], s["peak_rss_mib"],
                     extra, s["cpu_ms_per_poll"] or float("nan"), s["cpu_share"],
                     s["db_after_mib"], s["counts_ms"]))
    table = Table(title=f"the daemon, {options.rate:g} due polls/s at every size, "
                        f"{options.seconds:g} s window",
                  columns=("calls", "polls/s", "overdue at end", "lag p50 ms", "lag p99 ms",
                           "lag max ms", "peak RSS MiB", "RSS - idle MiB", "cpu ms/poll",
                           "cpu (cores)", "db MiB", "counts() ms"),
                  rows=rows)
    notes = [f"poll interval = calls / {options.rate:g} (e.g. {100_000 / options.rate:g} s at "
             f"100 000 calls); aims: p99 lag < 1000 ms and peak RSS < 150 MiB at 100 000"]
    return Report(name=NAME, params=asdict(options), tables=[table], notes=notes,
                  results={"by_size": {str(k): v for k, v in summaries.items()},
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
    from bench.polling import capture_targets, quiet_logs
    from worker.config import load
    from worker.daemon import http_client

    with tempfile.TemporaryDirectory(prefix="callwatch-bench-") as tmp:
        workdir = Path(tmp)
        async with simulator(workdir) as sim:
            scripts = live_scripts(calls, lasts=1.0, ends_every=options.ends_every,
                                   waiting=True)
            await add_sim_calls(sim, scripts)
            path, env = write_config(workdir, sim, tracking={})
            config = load(path, env)
            quiet_logs("warning")
            async with http_client(config) as client:
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
                        found = (await _one(at, calls, tree)).summary(options.seconds)
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

