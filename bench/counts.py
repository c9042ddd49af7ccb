"""``status``, the STATUS= line and ``counts`` at a million tracked calls, old code against new.

    python -m bench.counts --calls 1000000 --compare integ

For each code tree (the working tree, and with ``--compare REF`` a ``git worktree`` of REF
checked out next to it), a fresh process builds a database of ``calls`` calls through that
tree's own store (so each has its own schema: the old one without the maintained counters),
in a realistic mix: 80 % completed, 2 % failed, 10 % live, 2 % settling, 6 % pending, 0.1 %
set aside. Then, ``rounds`` times, the trees are measured in turn (old, new, old, new...),
each in a fresh process that opens its database and times, after one cold call, the median
of ``repeats`` calls of: ``counts()``; the STATUS= line (``supervise.status_line``); the
whole ``callwatch status --json`` overview (counts, deliveries, archive, newest calls).
The open, ``recover`` and the new code's ``recount_calls`` (the daemon's background check
of the maintained counts after start) are timed too.
Aim (issue 18): every one of the three under 50 ms at 1 000 000 calls.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import Report, Table, cli, median

NAME = "counts"
HERE = Path(__file__).resolve().parent
TREE = HERE.parent
CHILD = HERE / "counts_child.py"


@dataclass(frozen=True, kw_only=True)
class Options:
    calls: int = 1_000_000
    rounds: int = 3
    repeats: int = 5
    compare: str = ""  # a git ref to measure against (a worktree of it), "" for none


DEFAULT = Options()
QUICK = Options(calls=20_000, rounds=1, repeats=3)
FIGURES = ("counts_ms", "status_line_ms", "status_overview_ms", "counts_first_ms",
           "open_ms", "recover_ms", "recount_ms")


def _child(tree: Path, *args: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, str(CHILD), *args], env=env, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(result["worker"]).parent.resolve() != tree.resolve():
        raise RuntimeError(f"measured {result['worker']}, not {tree}")
    return result


def measure(options: Options) -> Report:
    workdir = Path(tempfile.mkdtemp(prefix="bench-counts-"))
    trees: dict[str, Path] = {"new (working tree)": TREE}
    try:
        if options.compare:
            old = workdir / "old"
            subprocess.run(["git", "-C", str(TREE), "worktree", "add", "--detach", str(old),
                            options.compare], check=True, capture_output=True)
            trees = {f"old ({options.compare})": old, **trees}
        builds: dict[str, tuple[Path, Path, dict[str, Any]]] = {}
        for label, tree in trees.items():
            db = workdir / f"{len(builds)}.db"
            builds[label] = (tree, db, _child(tree, "build", str(db), str(options.calls)))
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label in trees}
        for _ in range(options.rounds):
            for label, (tree, db, _) in builds.items():
                runs[label].append(_child(tree, "measure", str(db), str(options.repeats)))
        summary = {label: {f: median(r[f] for r in found) for f in FIGURES}
                   | {"calls": found[0]["calls"], "build_s": builds[label][2]["seconds"],
                      "db_bytes": builds[label][1].stat().st_size}
                   for label, found in runs.items()}
    finally:
        if options.compare:
            subprocess.run(["git", "-C", str(TREE), "worktree", "remove", "--force",
                            str(workdir / "old")], check=False, capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
    rows = [(label, s["calls"], s["counts_ms"], s["status_line_ms"], s["status_overview_ms"],
             s["counts_first_ms"], s["open_ms"], s["recount_ms"], s["db_bytes"] / s["calls"])
            for label, s in summary.items()]
    table = Table(title=f"{options.calls:,} calls, medians of {options.rounds} rounds "
                        f"(milliseconds)",
                  columns=("code", "calls", "counts", "STATUS=", "status", "counts cold",
                           "open", "recount", "bytes/call"),
                  rows=rows)
    notes = ["aim: counts, STATUS= and status each under 50 ms at 1,000,000 calls",
             f"finished {time.strftime('%H:%M:%S')}; trees alternated in every round"]
    return Report(name=NAME, params=asdict(options), tables=[table], notes=notes,
                  results={"summary": summary, "runs": runs})


def main(argv: Sequence[str] | None = None) -> int:
    return cli(NAME, __doc__, default=DEFAULT, quick=QUICK, measure=measure, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
