"""Plumbing shared by the benchmarks: reports, machine info, /proc sampling, the simulator.

Every figure a benchmark reports is measured next to a baseline in the same run, phases
interleaved, and summarised by the median over rounds: the machines are shared and noisy,
so an absolute number from one moment says little, a ratio to a neighbour says a lot.

The simulator always runs in a process of its own (``python -m worker.simulator``), so it
never shares an event loop or the GIL with what is measured; its CPU time is read from
/proc, which is how a benchmark can tell whether the simulator was the bottleneck.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from worker.demo import stop_daemon

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PROVIDERS = ("ultravox", "envoy", "apifycloud")
_TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- reports


@dataclass(frozen=True, kw_only=True)
class Table:
    """A small table for the terminal; the same numbers go to the JSON file."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def render(self) -> str:
        cells = [[_cell(v) for v in row] for row in self.rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(self.columns)]
        line = "  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True))
        rule = "  ".join("-" * w for w in widths)
        body = ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
        return "\n".join([self.title, line, rule, *body])


@dataclass(kw_only=True)
class Report:
    """What one benchmark measured: its parameters, figures, tables and remarks."""

    name: str
    params: dict[str, Any]
    results: dict[str, Any]
    tables: list[Table]
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        parts = [f"== {self.name} ==", *(t.render() + "\n" for t in self.tables)]
        parts += [f"note: {n}" for n in self.notes]
        return "\n".join(parts)

    def to_json(self, command: Sequence[str]) -> dict[str, Any]:
        """Everything needed to compare a later run: command, machine, parameters, rounds."""
        return {
            "name": self.name,
            "command": " ".join(command),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(),
            "params": self.params,
            "results": self.results,
            "tables": [asdict(t) for t in self.tables],
            "notes": self.notes,
        }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def write_report(report: Report, command: Sequence[str], out_dir: Path = RESULTS_DIR) -> Path:
    """``bench/results/<name>.json``: the report plus the machine and the command."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{report.name}.json"
    path.write_text(json.dumps(report.to_json(command), indent=2, default=str) + "\n",
                    encoding="utf-8")
    return path


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory, Python and SQLite versions, load when the report was made."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = _proc_field(Path("/proc/meminfo"), "MemTotal")
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1) if mem_kib else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()),
    }


# --------------------------------------------------------------------------- statistics


def median(values: Iterable[float]) -> float:
    found = list(values)
    return statistics.median(found) if found else float("nan")


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of unsorted ``values``; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# --------------------------------------------------------------------------- /proc


def _proc_field(path: Path, name: str) -> int | None:
    """A ``Name:   123 kB`` field of /proc/PID/status or /proc/meminfo, in KiB."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB: resident now, and the peak so far."""
    status = Path(f"/proc/{pid}/status")
    return _proc_field(status, "VmRSS") or 0, _proc_field(status, "VmHWM") or 0


# --------------------------------------------------------------------------- simulator


@dataclass(frozen=True, kw_only=True)
class Sim:
    """A simulator running in its own process, as its port file describes it."""

    pid: int
    base_urls: Mapping[str, str]
    api_keys: Mapping[str, str]
    control_url: str
    sink_url: str

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)


@dataclass(frozen=True, kw_only=True)
class Phase:
    """One measured window: work items done, wall and CPU time, the simulator's CPU."""

    done: int
    seconds: float
    cpu_seconds: float  # this process, every thread
    sim_cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.done / self.seconds

    @property
    def cpu_ms(self) -> float:
        """CPU of this process per item, in milliseconds."""
        return 1000 * self.cpu_seconds / max(1, self.done)

    @property
    def sim_util(self) -> float:
        """Share of one core the simulator used (it is single-threaded)."""
        return self.sim_cpu_seconds / self.seconds


@contextlib.asynccontextmanager
async def simulator(workdir: Path) -> AsyncIterator[Sim]:
    """``python -m worker.simulator`` without rate limits, until the block exits."""
    port_file = workdir / "simulator.json"
    with (workdir / "simulator.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.simulator", "--port-file", str(port_file),
             "--scenario", "empty", "--ultravox-rate-limit", "0"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the simulator did not start; see {workdir}/simulator.log")
            await anyio.sleep(0.05)
        info = json.loads(port_file.read_text())
        yield Sim(pid=proc.pid, base_urls=info["base_urls"], api_keys=info["api_keys"],
                  control_url=info["control_url"], sink_url=info["sink_url"])
    finally:
        stop_daemon(proc)  # any child: SIGTERM, wait, SIGKILL if it will not go


async def add_sim_calls(sim: Sim, scripts: Sequence[Mapping[str, Any]],
                        batch: int = 10_000) -> None:
    """Add call scripts (``{"provider", "call_id", ...}``) through the control API in bulk."""
    async with httpx.AsyncClient(base_url=sim.control_url, timeout=120) as client:
        for start in range(0, len(scripts), batch):
            reply = await client.post("/_control/calls/batch",
                                      json={"calls": list(scripts[start:start + batch])})
            reply.raise_for_status()


def write_config(workdir: Path, sim: Sim, *, tracking: Mapping[str, float],
                 concurrency: int = 32, rate_limit: float = 100_000.0,
                 log_level: str = "info") -> tuple[Path, dict[str, str]]:
    """A daemon config for ``sim`` (no archive, no webhooks); return its path and env.

    ``rate_limit`` is high on purpose: the default 50/s per provider is a politeness limit
    towards real platforms and would be what a benchmark measures.
    """
    env = {"BENCH_ULTRAVOX_KEY": sim.api_keys["ultravox"],
           "BENCH_ENVOY_KEY": sim.api_keys["envoy"]}
    lines = ["[worker]", 'database = "callwatch.db"', f'log_level = "{log_level}"', "",
             "[tracking]", *(f"{k} = {v}" for k, v in tracking.items())]
    keys = {"ultravox": "BENCH_ULTRAVOX_KEY", "envoy": "BENCH_ENVOY_KEY"}
    for name in PROVIDERS:
        lines += ["", f"[providers.{name}]", f'base_url = "{sim.base_urls[name]}"',
                  f"concurrency = {concurrency}", f"rate_limit = {rate_limit}"]
        if name in keys:
            lines.append(f'api_key_env = "{keys[name]}"')
    path = workdir / "callwatch.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, env


def live_scripts(count: int, *, lasts: float | None = None, ends_every: int = 0,
                 waiting: bool = False) -> list[dict[str, Any]]:
    """Scripts for ``count`` calls spread over the providers, live from the start.

    Every ``ends_every``-th call (0: none) ends after ``lasts`` seconds with a recording
    ready a second later; the others stay live (or, with ``waiting``, stay unanswered, not
    joined for a day): one GET per poll, for as long as we like. A waiting call's polls
    change nothing, as most polls of a long call do, not even the first one.
    """
    from worker.simulator.world import new_call_id

    scripts = []
    for i in range(count):
        provider = PROVIDERS[i % len(PROVIDERS)]
        ends = ends_every > 0 and i % ends_every == 0
        script: dict[str, Any] = {"provider": provider, "call_id": new_call_id(provider),
                                  "starts_after": 0.0, "lasts": lasts if ends else None,
                                  "recordings": [{"ready_after": 1.0, "size": 4096}]}
        if waiting and not ends:
            script.update(starts_after=None, join_timeout=86_400.0)
        scripts.append(script)
    return scripts


# --------------------------------------------------------------------------- command line


def _int_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part.replace("_", "")) for part in text.split(",") if part)


def cli(name: str, doc: str | None, *, default: Any, quick: Any,
        measure: Callable[[Any], Report], argv: Sequence[str] | None) -> int:
    """``python -m bench.NAME [--quick] [--FIELD VALUE ...]``: one benchmark on its own.

    ``default`` and ``quick`` are instances of the benchmark's frozen ``Options`` dataclass;
    every field can be overridden from the command line.
    """
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help=f"where NAME.json goes (default {RESULTS_DIR})")
    for field_name, value in asdict(default).items():
        flag = "--" + field_name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, dest=field_name, action="store_true", default=None)
        elif isinstance(value, tuple):
            parser.add_argument(flag, dest=field_name, type=_int_tuple, default=None,
                                help=f"comma-separated, default {','.join(map(str, value))}")
        else:
            parser.add_argument(flag, dest=field_name, type=type(value), default=None,
                                help=f"default {value}")
    args = parser.parse_args(argv)
    base = quick if args.quick else default
    chosen = {k: getattr(args, k) for k in asdict(base) if getattr(args, k) is not None}
    report = measure(dataclasses.replace(base, **chosen))
    print(report.render())
    command = [sys.executable, "-m", f"bench.{name}", *(argv or [])]
    print(f"wrote {write_report(report, command, args.results_dir)}")
    return 0
