"""``callwatch prune [--dry-run] [--vacuum] [--older-than SECONDS]``: apply retention now.

Prunes what the daemon would prune at its next pass (``worker.retention``): calls settled
more than ``[retention] settled_calls`` ago, with no delivery still open, with their events,
deliveries and attempt logs. One line per call removed (``--dry-run``: would remove), then
the totals. On a terminal a rich progress display runs on stderr while it works; otherwise
a plain progress line every few seconds. Archived recordings are never deleted.

``--vacuum`` also rewrites the whole SQLite file afterwards: it turns incremental
auto-vacuum on for a file made before it was the default, and gives every free page back to
the disk, at the price of holding the write lock for as long as the rewrite takes.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from worker.config import Config
from worker.errors import UsageError
from worker.retention import prune_batches
from worker.store.base import PrunedCall, TableStats
from worker.store.factory import open_configured
from worker.terminal import printable

PLAIN_EVERY = 5.0  # seconds between progress lines when not on a terminal


class BadInputError(UsageError):
    """Bad usage: exit 2 with this one line."""


def add_parser(commands: Any) -> None:
    prune = commands.add_parser(
        "prune", help="delete settled calls past [retention] settled_calls now",
        description="Delete calls settled longer ago than [retention] settled_calls (or\n"
                    "--older-than), with their events, deliveries and attempt logs. A call\n"
                    "with a delivery still pending is kept. Archived recordings are never\n"
                    "deleted. Prints one line per call removed, then the totals.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    prune.add_argument("--dry-run", action="store_true",
                       help="list what would be removed; remove nothing")
    prune.add_argument("--older-than", type=float, metavar="SECONDS",
                       help="instead of [retention] settled_calls")
    prune.add_argument("--vacuum", action="store_true",
                       help="then rewrite the database file (slow; holds writes meanwhile)")


def run_prune(config: Config, args: argparse.Namespace) -> int:
    import anyio

    age = config.retention.settled_calls if args.older_than is None else args.older_than
    if not age >= 0:
        raise BadInputError("--older-than must be 0 or more seconds")
    if age == 0 and args.older_than is None:
        print("retention is off ([retention] settled_calls = 0): nothing pruned; "
              "give --older-than SECONDS to prune anyway")
        return 0
    return anyio.run(_prune, config, time.time() - age, args.dry_run, args.vacuum)


async def _prune(config: Config, before: float, dry_run: bool, vacuum: bool) -> int:
    store = await open_configured(config)
    try:
        first = await store.table_stats()
        total = 0
        with Progress(sys.stderr, dry_run) as progress:
            async for batch in prune_batches(store, before, dry_run=dry_run):
                for call in batch:
                    print(_line(call, dry_run))
                total += len(batch)
                progress.update(total)
        if not dry_run and total:
            await store.reclaim_space()
        if vacuum and not dry_run:
            await store.vacuum()
        last = await store.table_stats()
        print(_summary(total, dry_run, first, last))
    finally:
        await store.close()
    return 0


def _line(call: PrunedCall, dry_run: bool) -> str:
    settled = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(call.settled_at))
    verb = "would remove" if dry_run else "removed"
    return f"{verb} {printable(call.provider)} {printable(call.call_id)} settled {settled}"


def _summary(total: int, dry_run: bool, first: TableStats, last: TableStats) -> str:
    if dry_run:
        return f"{total} settled calls would be removed (dry run: nothing was)"
    return (f"{total} settled calls removed; database {_mib(first.size_bytes)} -> "
            f"{_mib(last.size_bytes)}, {last.calls} calls, {last.events} events, "
            f"{last.deliveries} deliveries, {last.attempts} attempts left")


def _mib(size: int) -> str:
    return f"{size / 1048576:.1f} MiB"


class Progress:
    """A rich spinner with the count on a terminal; else a plain line every ``PLAIN_EVERY``."""

    def __init__(self, stream: TextIO, dry_run: bool) -> None:
        self._stream = stream
        self._verb = "found" if dry_run else "pruned"
        self._started = time.monotonic()
        self._last_line = time.monotonic()
        self._rich: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self._stream.isatty():
            from rich.console import Console
            from rich.progress import Progress as RichProgress
            from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

            self._rich = RichProgress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                console=Console(file=self._stream), transient=True)
            self._rich.__enter__()
            self._task = self._rich.add_task(f"calls {self._verb}: 0", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)

    def update(self, total: int) -> None:
        rate = total / max(1e-9, time.monotonic() - self._started)
        text = f"calls {self._verb}: {total} ({rate:,.0f}/s)"
        if self._rich is not None:
            self._rich.update(self._task, description=text)
            return
        now = time.monotonic()
        if now - self._last_line >= PLAIN_EVERY:
            self._last_line = now
            print(text, file=self._stream, flush=True)
