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
    "polling": ["--calls", "60", "--concurrency", "8", "--seconds", "0.3", "--warmup", "0.1",
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
