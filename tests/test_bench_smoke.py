"""The benchmarks run end to end at tiny sizes and write well-formed results.

Nothing here times anything: the figures of a smoke run mean nothing, only that every
benchmark still works against the code as it is. Deselect with ``-m "not bench_smoke"``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench_smoke

ROOT = Path(__file__).resolve().parent.parent
TINY = {
    "polling": ["--calls", "60", "--concurrency", "8", "--seconds", "1", "--warmup", "0.5",
                "--rounds", "1", "--diagnose"],
    "scale": ["--sizes", "300", "--rate", "100", "--seconds", "1", "--lead", "1.5"],
    "outbox": ["--events", "200", "--calls", "20", "--batch", "16", "--rounds", "1"],
    "discovery": ["--sizes", "300", "--rounds", "1"],
    "counts": ["--calls", "300", "--rounds", "1", "--repeats", "1"],
}


def test_each_benchmark_completes_and_writes_its_json(tmp_path: Path) -> None:
    """Every benchmark finishes at tiny sizes and writes a complete report."""
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", f"bench.{name}", "--quick", *args,
             "--results-dir", str(tmp_path)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for name, args in TINY.items()
    }
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"bench.{name} failed:\n{out.decode(errors='replace')}"
    for name in TINY:
        report = json.loads((tmp_path / f"{name}.json").read_text(encoding="utf-8"))
        assert report["name"] == name
        assert {"cores", "cpu_model", "python"} <= set(report["machine"])
        assert report["results"] and report["tables"]
        for table in report["tables"]:
            assert all(len(row) == len(table["columns"]) for row in table["rows"])


# The PostgreSQL benchmarks: each makes (and drops) databases of its own on the test server.
# Polling's phases last 1 s after 0.5 s of warm-up: in 0.3 s a fresh PostgreSQL pool (its
# connections opened on first use) could leave a phase with no commit at all.
TINY_PG = {
    "pgqueue": ["--jobs", "30", "--consumers", "2", "--batch", "1,4", "--rounds", "1"],
    "scale": ["--sizes", "300", "--rate", "100", "--seconds", "1", "--lead", "2",
              "--workers", "2"],
    "polling": ["--calls", "60", "--concurrency", "8", "--seconds", "1", "--warmup", "0.5",
                "--rounds", "1"],
}


def test_postgres_benchmarks_complete_and_write_their_json(tmp_path: Path,
                                                           pg_server: str) -> None:
    """The PostgreSQL benchmarks finish at tiny sizes against a real server: the store's
    queues next to procrastinate, the daemon on PostgreSQL with two workers, the pipeline
    on PostgreSQL next to SQLite."""
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", f"bench.{name}", "--quick", *args, "--database", pg_server,
             "--results-dir", str(tmp_path / name)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for name, args in TINY_PG.items()
    }
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"bench.{name} failed:\n{out.decode(errors='replace')}"
    reports = {name: json.loads((tmp_path / name / f"{name}.json").read_text(encoding="utf-8"))
               for name in TINY_PG}
    queue = reports["pgqueue"]["results"]
    assert set(queue["jobs_per_s"]) == {"procrastinate", "calls x1", "calls x4",
                                        "deliveries x1", "deliveries x4"}
    assert all(rate > 0 for rate in queue["jobs_per_s"].values())
    two = reports["scale"]["results"]["by_size"]["300x2"]
    assert two["workers"] == 2 and two["polls"] > 0 and two["db_cpu_share"] > 0
    polling = reports["polling"]["results"]
    assert polling["pg_pipeline_over_bare"] > 0
    assert polling["polls_per_s"]["pipeline-pg"] > 0
