"""One sweep of a provider's list: page after page, paced, bounded, each page tracked at once.

Shared by the discovery component (every ``discover_interval``) and ``callwatch backfill``.

* **Pacing**: every page takes a token from the provider's bucket, the very object its polling
  lane uses, and a 429/503 pauses that bucket: the sweep and the lane slow down together, and
  the sweep never adds more than one request per page of 100 calls to the lane's budget. It
  has one request in flight, the lane up to its concurrency: a lane with a backlog keeps
  nearly all of the budget while a sweep runs.
* **Resume**: a page that fails (429, 5xx, a page too large to read) is asked again, after the
  pause or a short back-off, up to ``attempts`` times; a sweep that still fails ends
  incomplete, and the next one starts from the durable mark (``discovery_plan``).
* **Bounds**: at most ``max_pages`` pages; a ``next`` already seen among the last
  ``LOOP_MEMORY`` pages ends the sweep as a loop. At most ``BATCH_PAGES`` pages wait between
  the reader and the writer, so memory is bounded whatever the length of the list.
* **Group commit**: the writer records up to ``BATCH_PAGES`` pages in one ``record`` (one
  transaction): those waiting when it is free, and those that arrive within ``LINGER``
  seconds of the first. SQLite's cost per call falls by half from one page a commit to
  twenty (inserts of random call ids touch an index page each, and a commit writes every
  page it touched); a periodic sweep's calls are tracked at most ``LINGER`` later. Pages
  count as read, and the mark moves, only once their batch is committed.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from worker.discovery_plan import Window, wanted
from worker.model import FailureKind, PollFailed
from worker.providers.listing import CallLister, ListedCall, Page
from worker.ratelimit import TokenBucket

log = structlog.get_logger("worker.discovery")

MAX_PAGES = 1_000  # per periodic sweep: 100 000 calls
LOOP_MEMORY = 1_000
BATCH_PAGES = 20  # pages waiting for the writer at most, and recorded in one transaction
LINGER = 0.5  # seconds the writer waits for a batch to fill
_POLL = 0.02
ATTEMPTS = 5
MAX_BACKOFF = 30.0

Record = Callable[[Sequence[ListedCall]], Awaitable[int]]  # track these; return how many new


@dataclass(kw_only=True)
class SweepReport:
    """What one sweep did; updated page by page (the backfill progress display reads it)."""

    pages: int = 0
    found: int = 0  # listed calls inside the window
    new: int = 0  # of those, tracked by this sweep
    skipped: int = 0  # items without a usable id or time
    outside: int = 0  # listed, but created outside the window
    retries: int = 0
    complete: bool = False
    stopped: str | None = None  # why an incomplete sweep ended
    newest_read: float | None = None  # newest creation time on a recorded page

    @property
    def already_tracked(self) -> int:
        return self.found - self.new


async def sweep(
    lister: CallLister, bucket: TokenBucket, window: Window, record: Record, *,
    max_pages: int = MAX_PAGES, attempts: int = ATTEMPTS,
    on_page: Callable[[SweepReport], Awaitable[None]] | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> SweepReport:
    """List ``window`` page by page, ``record`` each page's calls; never raises for a reply.

    The next pages are fetched while the current ones are recorded (the provider's answers
    and the database write overlap); the stream between the two holds ``BATCH_PAGES``.
    """
    report = SweepReport()
    send, receive = anyio.create_memory_object_stream[Page | str](BATCH_PAGES)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_read_pages, lister, bucket, window, send, report,
                          _Bounds(max_pages=max_pages, attempts=attempts, stopping=stopping))
            async with receive:
                async for first in receive:
                    pages, end = await _batch(first, receive)
                    if pages:
                        await _record(pages, window, record, report)
                        if on_page is not None:
                            await on_page(report)
                    if end is not None:
                        if end == "complete":
                            report.complete = True
                        else:
                            report.stopped = end
                        break
    except BaseExceptionGroup as group:  # the one error of the store or a callback, as it is
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    return report


@dataclass(frozen=True, kw_only=True, slots=True)
class _Bounds:
    max_pages: int
    attempts: int
    stopping: Callable[[], bool]


async def _read_pages(  # noqa: PLR0917 - started by start_soon, which passes positionally
    lister: CallLister, bucket: TokenBucket, window: Window,
    send: MemoryObjectSendStream[Page | str], report: SweepReport, bounds: _Bounds,
) -> None:
    """Fetch pages in order into ``send``; the last item says why the list ended."""
    url = lister.first_url(window.since, window.until)
    recent: deque[str] = deque(maxlen=LOOP_MEMORY)
    seen: set[str] = set()
    fetched = 0
    async with send:
        while True:
            if fetched >= bounds.max_pages:
                await send.send(_stop(lister, "page_limit", max_pages=bounds.max_pages))
                return
            if bounds.stopping():
                await send.send(_stop(lister, "stopping"))
                return
            if len(recent) == recent.maxlen:
                seen.discard(recent[0])
            recent.append(url)
            seen.add(url)
            page = await _fetch(lister, bucket, url, bounds.attempts, report)
            if isinstance(page, PollFailed):
                await send.send(_stop(lister, "failed", reason=page.message))
                return
            fetched += 1
            await send.send(page)
            if page.next_url is None:
                await send.send(_stop(lister, "foreign_next") if page.refused_next
                                else "complete")
                return
            if page.next_url in seen:
                await send.send(_stop(lister, "loop"))
                return
            url = page.next_url


async def _batch(first: Page | str, receive: MemoryObjectReceiveStream[Page | str],
                 ) -> tuple[list[Page], str | None]:
    """``first`` and the pages behind it, up to ``BATCH_PAGES``, waiting ``LINGER`` at most
    for them; and the end of the list if it came (always last: the reader sends nothing
    after it). It polls rather than wait on ``receive()`` under a timeout: a cancelled
    receive could drop a page already handed over."""
    pages: list[Page] = []
    if isinstance(first, str):
        return pages, first
    pages.append(first)
    deadline = anyio.current_time() + LINGER
    while len(pages) < BATCH_PAGES:
        try:
            item = receive.receive_nowait()
        except anyio.WouldBlock:
            if anyio.current_time() >= deadline:
                break
            await anyio.sleep(_POLL)
            continue
        except anyio.EndOfStream:
            break
        if isinstance(item, str):
            return pages, item
        pages.append(item)
    return pages, None


async def _record(pages: Sequence[Page], window: Window, record: Record,
                  report: SweepReport) -> None:
    """Record ``pages`` with one ``record``; count them only once it has succeeded."""
    calls = [c for page in pages for c in page.calls if wanted(c.created, window)]
    if calls:
        report.new += await record(calls)
    report.found += len(calls)
    for page in pages:
        report.outside += len(page.calls)
        report.skipped += page.skipped
        times = [c.created for c in page.calls if c.created is not None]
        if times:
            newest = max(times)
            report.newest_read = (newest if report.newest_read is None
                                  else max(report.newest_read, newest))
    report.outside -= len(calls)
    report.pages += len(pages)


async def _fetch(lister: CallLister, bucket: TokenBucket, url: str, attempts: int,
                 report: SweepReport) -> Page | PollFailed:
    """One page, asked again after a 429/503 pause or a transient failure."""
    failed = PollFailed(kind=FailureKind.TRANSIENT, message="no attempt made")
    for attempt in range(max(1, attempts)):
        wait = bucket.reserve()
        if wait > 0:
            await anyio.sleep(wait)
        result = await lister.page(url)
        if not isinstance(result, PollFailed):
            return result
        failed = result
        if result.kind is FailureKind.RATE_LIMITED:
            pause = result.retry_after if result.retry_after is not None else 1.0
            bucket.pause(pause)  # the polling lane waits too: same bucket
            log.warning("discovery.rate_limited", provider=lister.name, retry_after=pause)
        elif result.kind is FailureKind.TRANSIENT:
            backoff = min(MAX_BACKOFF, math.pow(2, attempt))
            log.warning("discovery.page_failed", provider=lister.name, reason=result.message,
                        retry_in=backoff)
            await anyio.sleep(backoff)
        else:
            return result  # a rejected key or request: asking again changes nothing
        report.retries += 1
    return failed


def _stop(lister: CallLister, why: str, **details: object) -> str:
    if why != "stopping":
        log.warning("discovery.sweep_cut_short", provider=lister.name, why=why, **details)
    return why
