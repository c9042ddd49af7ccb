"""``callwatch backfill PROVIDER --since TIME [--until TIME] [--dry-run]``: one sweep, once.

It lists the calls created in the window and tracks those not tracked yet, exactly as
discovery does (``discovery_sweep.sweep``), but over a window the operator names, without the
discovery lease or mark: it is idempotent, so stopping it and running it again resumes it
(what was tracked stays tracked, and is counted as "already tracked" the second time).

On a terminal a rich display shows pages, calls found, new ones and the rate; otherwise a
plain line every few seconds. The last line says found / already tracked / newly tracked.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import anyio
import httpx

from worker import __version__
from worker.config import Config
from worker.config_discovery import parse_rfc3339
from worker.discovery_plan import Window
from worker.discovery_sweep import SweepReport, sweep
from worker.errors import UsageError
from worker.providers.listing import LISTABLE, ListedCall, make_lister
from worker.ratelimit import TokenBucket
from worker.store.base import NewCall, Store
from worker.store.factory import open_configured

MAX_PAGES = 1_000_000  # 100 million calls: a bound against a list that never ends
PLAIN_EVERY = 5.0  # seconds between progress lines when not on a terminal


class BadInputError(UsageError):
    """Bad usage: exit 2 with this one line."""


def add_parser(commands: Any) -> None:
    backfill = commands.add_parser(
        "backfill", help="list a provider's calls created in a window and track the new ones")
    backfill.add_argument("provider")
    backfill.add_argument("--since", required=True, metavar="TIME",
                          help="RFC 3339, like 2026-12-01T00:00:00Z (inclusive)")
    backfill.add_argument("--until", metavar="TIME", help="RFC 3339 (inclusive; default: now)")
    backfill.add_argument("--dry-run", action="store_true",
                          help="list and count, but track nothing")


def window_of(args: argparse.Namespace, now: float) -> Window:
    """The window the arguments name; BadInputError for a bad or empty one."""
    since = parse_rfc3339(args.since)
    if since is None:
        raise BadInputError(f"--since {args.since[:60]!r} is not an RFC 3339 time with a "
                            "zone, like 2026-12-01T00:00:00Z")
    until = now
    if args.until is not None:
        parsed = parse_rfc3339(args.until)
        if parsed is None:
            raise BadInputError(f"--until {args.until[:60]!r} is not an RFC 3339 time with a "
                                "zone, like 2026-12-02T00:00:00Z")
        until = parsed
    if until < since:
        raise BadInputError("--until is before --since")
    return Window(since=since, until=until)


def run_backfill(config: Config, args: argparse.Namespace) -> int:
    """Check the input, run the sweep, print the totals; the exit code."""
    provider = args.provider
    if provider not in LISTABLE:
        raise BadInputError(f"{provider[:40]!r} has no list endpoint to backfill from "
                            f"(backfill works for: {', '.join(sorted(LISTABLE))})")
    if provider not in config.providers:
        raise BadInputError(f"{provider} is not configured ([providers.{provider}])")
    window = window_of(args, time.time())
    report = anyio.run(_backfill, config, provider, window, args.dry_run)
    verb = "would track" if args.dry_run else "newly tracked"
    print(f"{provider}: found {report.found}, already tracked {report.already_tracked}, "
          f"{verb} {report.new} ({report.pages} pages"
          f"{f', {report.skipped} unreadable items skipped' if report.skipped else ''})")
    if not report.complete:
        print(f"callwatch: the list was cut short ({report.stopped}): run the same command "
              "again to resume", file=sys.stderr)
        return 1
    return 0


async def _backfill(config: Config, provider: str, window: Window, dry_run: bool) -> SweepReport:
    settings = config.providers[provider]
    store = await open_configured(config)
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=5.0),
                                     headers={"User-Agent": f"callwatch/{__version__}"},
                                     follow_redirects=False) as client:
            lister = make_lister(settings, client)
            record = _counter(store, provider) if dry_run else _tracker(store, provider)
            with Progress(sys.stderr) as progress:
                return await sweep(lister, TokenBucket(settings.rate_limit), window, record,
                                   max_pages=MAX_PAGES, on_page=progress.update)
    finally:
        await store.close()


def _tracker(store: Store, provider: str) -> Any:
    async def record(calls: Sequence[ListedCall]) -> int:
        now = time.time()
        return await store.track_many([(NewCall(provider=provider, call_id=c.call_id), now)
                                       for c in calls])
    return record


def _counter(store: Store, provider: str) -> Any:
    async def record(calls: Sequence[ListedCall]) -> int:
        return sum([await store.get_call(provider, c.call_id) is None for c in calls])
    return record


class Progress:
    """A rich live display on a terminal; otherwise a plain line every ``PLAIN_EVERY`` s."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._started = time.monotonic()
        self._last_line = 0.0
        self._rich: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self._stream.isatty():
            from rich.console import Console
            from rich.progress import Progress as RichProgress
            from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

            self._rich = RichProgress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                console=Console(file=self._stream), transient=False)
            self._rich.__enter__()
            self._task = self._rich.add_task("listing...", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)

    def line(self, report: SweepReport) -> str:
        rate = report.found / max(1e-9, time.monotonic() - self._started)
        return (f"pages {report.pages}, calls found {report.found}, new {report.new}, "
                f"{rate:,.0f} calls/s")

    async def update(self, report: SweepReport) -> None:
        if self._rich is not None:
            self._rich.update(self._task, description=self.line(report))
            return
        now = time.monotonic()
        # The first update whatever its page count: the sweep commits pages in batches.
        if not self._last_line or now - self._last_line >= PLAIN_EVERY:
            self._last_line = now
            print(self.line(report), file=self._stream, flush=True)
