"""Stand-ins for parts of the pipeline in ``bench.polling``.

* ``InstantProvider``: answers every poll at once, without HTTP (the ``scheduler`` phase).

Two stores for ``--diagnose``, to find where the pipeline's cost over the adapters goes:

* ``MemoryStore``: the calls in a deque per provider, claimed and put back in memory. The
  write's parameters are still built (``rows.decision_writes``, ``rows.call_updates``), so
  the scheduler, reconcile and the row building cost what they cost in the daemon; only
  SQLite is gone.
* ``LoopThreadStore``: the daemon's own SQL (``store/jobs.py``) and parsing, run on the event
  loop's thread with a plain ``sqlite3`` connection instead of aiosqlite's thread.

``memory`` against ``pipeline`` is what the database costs in all; ``loop-thread`` against
``pipeline`` is the part due to handing every statement to another thread (which must win
the GIL back from a busy event loop). Neither is fit for the daemon: the first keeps no
state, the second would block the event loop on every lock wait and checkpoint.
"""

from __future__ import annotations

import collections
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

from worker.model import (
    CallStatus,
    DownloadSource,
    NotFound,
    PollFailed,
    PollResult,
    Snapshot,
    TrackedCall,
)
from worker.store import jobs, rows
from worker.store.base import PollApplied
from worker.store.sqlite import BUSY_TIMEOUT_MS, LEASE_SECONDS


class MemoryStore:
    """Claims from and commits to memory; counts what it commits."""

    lease_seconds = LEASE_SECONDS

    async def extend_call_leases(self, now: float) -> int:
        await anyio.lowlevel.checkpoint()
        return 0

    async def wait_for_change(self, timeout: float) -> bool:
        await anyio.sleep(timeout)
        return False

    def __init__(self, calls: Sequence[TrackedCall]) -> None:
        self._due: dict[str, collections.deque[TrackedCall]] = collections.defaultdict(
            collections.deque)
        for call in calls:
            self._due[call.provider].append(call)
        self.committed = 0

    async def claim_due_calls(self, provider: str, now: float, limit: int) -> list[TrackedCall]:
        await anyio.lowlevel.checkpoint()
        due = self._due[provider]
        return [due.popleft() for _ in range(min(limit, len(due)))]

    async def next_due_at(self, provider: str) -> float | None:
        await anyio.lowlevel.checkpoint()
        return time.time() if self._due[provider] else None

    async def apply_poll_results(self, items: Sequence[PollApplied], now: float) -> None:
        await anyio.lowlevel.checkpoint()
        rows.call_updates(rows.poll_writes(items, now).calls)
        for item in items:
            self._due[item.decision.call.provider].append(item.decision.call)
        self.committed += len(items)


class LoopThreadStore:
    """The store's hot statements on the event loop's own thread; counts what it commits."""

    lease_seconds = LEASE_SECONDS

    async def extend_call_leases(self, now: float) -> int:
        await anyio.lowlevel.checkpoint()
        return 0

    async def wait_for_change(self, timeout: float) -> bool:
        await anyio.sleep(timeout)
        return False

    def __init__(self, path: Path, owner: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        for pragma in ("synchronous=NORMAL", f"busy_timeout={BUSY_TIMEOUT_MS}"):
            self._db.execute(f"PRAGMA {pragma}")
        self._owner = owner
        self.committed = 0

    def close(self) -> None:
        self._db.close()

    async def claim_due_calls(self, provider: str, now: float, limit: int) -> list[TrackedCall]:
        await anyio.lowlevel.checkpoint()
        claimed, recordings = jobs.claim_due(self._db, provider, now=now, owner=self._owner,
                                             until=now + LEASE_SECONDS, limit=limit)
        return rows.calls_from_values(claimed, recordings)

    async def next_due_at(self, provider: str) -> float | None:
        await anyio.lowlevel.checkpoint()
        row = self._db.execute(rows.NEXT_DUE, (provider,)).fetchone()
        return row[0] if row and row[0] is not None else None

    async def apply_poll_results(self, items: Sequence[PollApplied], now: float) -> None:
        await anyio.lowlevel.checkpoint()
        writes = rows.poll_writes(items, now)
        jobs.write_decisions(self._db, writes, rows.call_updates(writes.calls))
        self.committed += len(items)


class InstantProvider:
    """Answers every poll at once, as a waiting call: the scheduler and the store alone."""

    name = "instant"

    def validate_call_id(self, call_id: str) -> str | None:
        return None

    async def fetch_call(self, call_id: str) -> PollResult:
        await anyio.lowlevel.checkpoint()
        return Snapshot(status=CallStatus.PENDING, provider_status="queued")

    async def recording_source(self, call_id: str, recording_id: str
                               ) -> DownloadSource | NotFound | PollFailed:
        return NotFound()

    def download_headers(self, url: str) -> dict[str, str]:
        return {}
