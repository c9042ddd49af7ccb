"""``python -m bench`` (``./dev bench``): every benchmark, each in a fresh interpreter.

    python -m bench              the whole set at default sizes (a few minutes)
    python -m bench --quick      a smoke run: tiny sizes, a few seconds each
    python -m bench --only NAME  one benchmark (repeatable); extra args after -- go to it

Each benchmark is ``bench/NAME.py``, run as ``python -m bench.NAME`` in its own process (no
event loop, logging set-up or memory carried from one to the next); it prints its tables
and writes ``bench/results/NAME.json``. A benchmark that is not there yet is skipped, so
the ones other work adds (relay, archive, endlatency) join the set when their file lands.
The runner adds the machine (cores, CPU model, Python) to any result file that lacks it.
The fault soak (``bench/soak.py``) is not a benchmark and is never run from here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import RESULTS_DIR, machine

HERE = Path(__file__).resolve().parent
# name -> extra arguments for --quick (a module that has no --quick gets small sizes)
SUITE: dict[str, list[str]] = {
    "polling": ["--quick"],
    "scale": ["--quick"],
    "outbox": ["--quick"],
    "relay": ["--quick"],
    "archive": ["--sizes", "8", "--reps", "1"],
    "archive_s3": ["--sizes", "8", "--reps", "1"],
    "endlatency": ["--quick"],
    "discovery": ["--quick"],
    "counts": ["--quick"],
}


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    parser.add_argument("--only", action="append", choices=sorted(SUITE), metavar="NAME",
                        help=f"run only this one ({', '.join(SUITE)}); repeatable")
    argv = list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    return parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv), extra


def _stamp(name: str, command: list[str]) -> None:
    """Add the machine and the command to a result file written without them."""
    path = RESULTS_DIR / f"{name}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(data, dict) and "machine" not in data:
        data["machine"] = machine()
        data.setdefault("command", " ".join(command))
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def run_one(name: str, args: list[str]) -> tuple[int, float]:
    """``python -m bench.NAME ARGS``; its exit code and how long it took."""
    command = [sys.executable, "-m", f"bench.{name}", *args]
    print(f"\n$ {' '.join(['python', *command[1:]])}", flush=True)
    started = time.monotonic()
    code = subprocess.call(command)
    _stamp(name, command)
    return code, time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> int:
    """Run the set in order; exit 1 if any benchmark failed (the others still run)."""
    args, extra = _parse(sys.argv[1:] if argv is None else argv)
    names = [n for n in SUITE if (not args.only or n in args.only)
             and (HERE / f"{n}.py").exists()]
    outcome = []
    for name in names:
        code, seconds = run_one(name, [*(SUITE[name] if args.quick else []), *extra])
        outcome.append((name, code, seconds))
    print("\nbenchmark     exit  seconds")
    for name, code, seconds in outcome:
        print(f"{name:<12}  {code:>4}  {seconds:7.1f}")
    skipped = [n for n in SUITE if n not in names and (not args.only or n in args.only)]
    if skipped:
        print(f"not present, skipped: {', '.join(skipped)}")
    print(f"results in {RESULTS_DIR}")
    return 1 if any(code for _, code, _ in outcome) else 0


if __name__ == "__main__":
    raise SystemExit(main())
