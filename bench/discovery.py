"""Backfill throughput: ``callwatch backfill`` against a bare httpx loop paging the same list.

The simulator (its own process, no rate limit) holds ``calls`` Ultravox calls created in the
past. Each round, interleaved:

* **bare**: one httpx client follows ``next`` from the first page of ``GET /api/calls``
  (``sort=created``, 100 a page), parsing each page's JSON and counting its results: the
  least any client can do to read the list;
* **backfill**: ``python -m worker backfill ultravox --since ... --until ...`` on a fresh
  database, as a subprocess (its start-up included): reading, checking and tracking every
  call. Its peak RSS (VmHWM, sampled from /proc) is reported per size: it should be flat in
  the number of calls, since only one page is held at a time.

The figure is backfill calls/s over bare calls/s, median over rounds (aim: >= 0.8).

With ``--compare REF`` the backfill of REF (a ``git worktree`` of it, checked out next to the
working tree) runs too, in every round between bare and the working tree's, so old and new
are measured against the same bare loop, alternated:

    python -m bench.discovery --sizes 100000 --rounds 3 --compare main
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx

from bench.common import (
    Phase,
    Report,
    Sim,
    Table,
    add_sim_calls,
    cli,
    cpu_seconds,
    median,
    rss_kib,
    simulator,
    write_config,
)
from worker.simulator.world import new_call_id

TREE = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, kw_only=True)
class Options:
    sizes: tuple[int, ...] = (10_000, 100_000)
    rounds: int = 3
    compare: str = ""  # a git ref whose backfill runs too, alternated; "" for none


QUICK = Options(sizes=(300,), rounds=1)


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


async def bare_loop(sim: Sim, since: float, until: float) -> Phase:
    """Follow ``next`` with one client; parse each page; count the calls."""
    headers = {"X-API-Key": sim.api_keys["ultravox"]}
    url: str | None = (f"{sim.base_urls['ultravox']}/api/calls?pageSize=100&sort=created"
                       f"&fromDate={rfc3339(since)}&toDate={rfc3339(until)}")
    done = 0
    sim_cpu, cpu, started = sim.cpu_seconds(), time.process_time(), time.perf_counter()
    async with httpx.AsyncClient(timeout=30) as client:
        while url:
            page = (await client.get(url, headers=headers)).json()
            done += len(page["results"])
            url = page["next"]
    return Phase(done=done, seconds=time.perf_counter() - started,
                 cpu_seconds=time.process_time() - cpu,
                 sim_cpu_seconds=sim.cpu_seconds() - sim_cpu)


async def backfill(sim: Sim, workdir: Path, since: float, until: float,
                   tree: Path = TREE) -> tuple[Phase, int]:
    """One ``callwatch backfill`` of ``tree``'s code on a fresh database; its phase and peak
    RSS (KiB)."""
    for old in workdir.glob("callwatch.db*"):
        old.unlink()
    config, env = write_config(workdir, sim, tracking={}, log_level="warning")
    sim_cpu, started = sim.cpu_seconds(), time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "--config", str(config), "backfill", "ultravox",
         "--since", rfc3339(since), "--until", rfc3339(until)],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree), **env}, cwd=tree,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = cpu = 0.0
    while proc.poll() is None:
        try:
            peak = max(peak, rss_kib(proc.pid)[1])
            cpu = cpu_seconds(proc.pid)
        except (OSError, IndexError):  # it exited between poll() and the read
            pass
        await anyio.sleep(0.05)
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"backfill failed ({proc.returncode}): {err.decode()[-500:]}")
    found = int(out.decode().split("newly tracked ", 1)[1].split(" ", 1)[0])
    return Phase(done=found, seconds=seconds, cpu_seconds=cpu,
                 sim_cpu_seconds=sim.cpu_seconds() - sim_cpu), int(peak)


async def measure_async(options: Options) -> Report:
    workdir = Path(tempfile.mkdtemp(prefix="bench-discovery-"))
    trees: dict[str, Path] = {"new (working tree)" if options.compare else "working tree": TREE}
    try:
        if options.compare:
            old = workdir / "old"
            subprocess.run(["git", "-C", str(TREE), "worktree", "add", "--detach", str(old),
                            options.compare], check=True, capture_output=True)
            trees = {f"old ({options.compare})": old, **trees}
        async with simulator(workdir) as sim:
            rows, results = await _sizes(sim, workdir, trees, options)
    finally:
        if options.compare:
            subprocess.run(["git", "-C", str(TREE), "worktree", "remove", "--force",
                            str(workdir / "old")], check=False, capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
    table = Table(title="backfill of Ultravox calls vs a bare httpx loop paging the same list",
                  columns=("calls", "code", "bare calls/s", "backfill calls/s", "ratio",
                           "bare CPU µs/call", "backfill CPU µs/call", "sim util (bare)",
                           "backfill peak RSS MiB"), rows=rows)
    notes = ["backfill includes its process start-up and writing every call to a fresh "
             "SQLite database; bare only reads and parses"]
    if options.compare:
        notes.append("each round: bare, then the two backfills, their order swapped every "
                     "round; ratio = backfill calls/s over the same round's bare calls/s")
    return Report(name="discovery", params={"sizes": list(options.sizes),
                                            "rounds": options.rounds,
                                            "compare": options.compare},
                  results=results, tables=[table], notes=notes)


async def _sizes(sim: Sim, workdir: Path, trees: dict[str, Path],
                 options: Options) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    rows: list[tuple[Any, ...]] = []
    results: dict[str, Any] = {}
    start = float(int(time.time() - max(options.sizes) * 0.001 - 3600))  # exact in µs
    added = 0
    for size in sorted(options.sizes):
        scripts: list[dict[str, Any]] = [
            {"provider": "ultravox", "call_id": new_call_id("ultravox"),
             "created_at": start + i * 0.001, "starts_after": None,
             "join_timeout": 86_400.0, "recordings": []}
            for i in range(added, size)]
        await add_sim_calls(sim, scripts)
        added = size
        since, until = start, start + (size - 1) * 0.001 + 0.0005
        runs: dict[str, list[tuple[Phase, Phase, int]]] = {label: [] for label in trees}
        for n in range(options.rounds):
            bare = await bare_loop(sim, since, until)
            if bare.done != size:
                raise RuntimeError(f"listed {bare.done}, expected {size}")
            order = list(trees.items())
            for label, tree in order if n % 2 == 0 else order[::-1]:
                fill, peak = await backfill(sim, workdir, since, until, tree)
                if fill.done != size:
                    raise RuntimeError(f"{label}: tracked {fill.done}, expected {size}")
                runs[label].append((bare, fill, peak))
        results[str(size)] = {}
        for label, found in runs.items():
            ratios = [fill.rate / bare.rate for bare, fill, _ in found]
            summary: dict[str, Any] = {
                "bare_calls_per_s": median(b.rate for b, _, _ in found),
                "backfill_calls_per_s": median(f.rate for _, f, _ in found),
                "ratio": median(ratios), "ratios": ratios,
                "bare_cpu_us_per_call": median(b.cpu_ms * 1000 for b, _, _ in found),
                "backfill_cpu_us_per_call": median(f.cpu_ms * 1000 for _, f, _ in found),
                "sim_util_bare": median(b.sim_util for b, _, _ in found),
                "peak_rss_mib": max(p for _, _, p in found) / 1024}
            results[str(size)][label] = summary
            rows.append((size, label, round(summary["bare_calls_per_s"]),
                         round(summary["backfill_calls_per_s"]), round(summary["ratio"], 2),
                         round(summary["bare_cpu_us_per_call"]),
                         round(summary["backfill_cpu_us_per_call"]),
                         round(summary["sim_util_bare"], 2),
                         round(summary["peak_rss_mib"], 1)))
    return rows, results


def measure(options: Options) -> Report:
    return anyio.run(measure_async, options)


def main(argv: Sequence[str] | None = None) -> int:
    return cli("discovery", __doc__, default=Options(), quick=QUICK, measure=measure,
               argv=argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
