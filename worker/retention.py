"""Retention: settled calls are deleted ``[retention] settled_calls`` seconds after they settled.

Used by the daemon's ``Retention`` component (every ``EVERY`` seconds) and by
``callwatch prune`` (once, now). Both go through ``prune_batches``: batches of ``BATCH``
calls, each one short transaction (``RetentionStore.prune_settled``), with a pause between
them so the scheduler, relay and archiver keep getting the write lock; after the last batch
the freed pages go back to the file system (``reclaim_space``). What may be pruned (settled
before the cut-off, no delivery open, every event fanned out) is the store's rule; recordings
already archived (files, objects) are never touched.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass

import anyio
import structlog
from anyio.abc import TaskStatus

from worker.config import Config
from worker.config_sections import RetentionConfig
from worker.store.base import PrunedCall, Store, StoreError

log = structlog.get_logger("worker.retention")

BATCH = 500  # calls per transaction: a few milliseconds of write lock each
PAUSE = 0.2  # seconds between two batches, for the other writers
EVERY = 600.0  # seconds between two passes of the daemon (less when retention is shorter)


def pass_interval(settings: RetentionConfig, every: float = EVERY) -> float:
    """Seconds between two passes: ``every``, or a tenth of a short retention (at least 1)."""
    return min(every, max(1.0, settings.settled_calls / 10))


def cutoff(now: float, settings: RetentionConfig) -> float | None:
    """Calls settled before this time may go; None when retention is off (0 = never)."""
    return now - settings.settled_calls if settings.enabled else None


async def prune_batches(store: Store, before: float, *, dry_run: bool = False,
                        batch: int = BATCH, pause: float = PAUSE
                        ) -> AsyncGenerator[list[PrunedCall]]:
    """Prune (or, ``dry_run``, list) every prunable call settled before ``before``, one batch
    at a time; yields each batch as it is done."""
    after = 0
    while True:
        found = await store.prune_settled(before, limit=batch, dry_run=dry_run, after=after)
        if not found:
            return
        yield found
        after = found[-1].position
        if len(found) < batch:
            return
        await anyio.sleep(pause)


@dataclass(frozen=True, kw_only=True, slots=True)
class RetentionStats:
    """What the component has done since start (for health and metrics)."""

    pruned: int  # calls deleted since start
    passes: int  # passes finished
    last_pass_at: float | None  # wall time the last pass finished
    last_error: str | None


class Retention:
    """Prunes settled calls every ``EVERY`` seconds while retention is on: a ``Component``
    (``worker/component.py``) with ``RetentionStats``.

    Reports no ``progress()``: it sleeps most of the time, which a watchdog would read as
    stalled. A pass that fails (a busy or full database) is logged and tried at the next.
    """

    def __init__(self, store: Store, settings: RetentionConfig, *,
                 clock: Callable[[], float] = time.time, every: float = EVERY,
                 pause: float = PAUSE) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._every = every
        self._pause = pause
        self._stop = anyio.Event()
        self._pruned = 0
        self._passes = 0
        self._last_pass_at: float | None = None
        self._last_error: str | None = None

    @classmethod
    def attach(cls, config: Config, store: Store) -> Retention:
        return cls(store, config.retention)

    @property
    def name(self) -> str:
        return "retention"

    def progress(self) -> float | None:
        """None: it sleeps between passes, which a watchdog would read as stalled."""
        return None

    def describe(self) -> str:
        """Nothing for the STATUS= line: pruning is housekeeping, logged as it happens."""
        return ""

    @property
    def stats(self) -> RetentionStats:
        return RetentionStats(pruned=self._pruned, passes=self._passes,
                              last_pass_at=self._last_pass_at, last_error=self._last_error)

    def reconfigure(self, config: Config) -> None:
        """A new ``settled_calls`` applies from the next pass (SIGHUP)."""
        self._settings = config.retention

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while not self._stop.is_set():
            await self.prune_once()
            with anyio.move_on_after(pass_interval(self._settings, self._every)):
                await self._stop.wait()

    async def prune_once(self) -> int:
        """One pass: every prunable call, in batches; how many were pruned."""
        before = cutoff(self._clock(), self._settings)
        if before is None:
            return 0
        pruned = 0
        try:
            async with aclosing(prune_batches(self._store, before, pause=self._pause)) as batches:
                async for found in batches:
                    pruned += len(found)
                    self._pruned += len(found)
                    if self._stop.is_set():
                        break
            if pruned:
                freed = await self._store.reclaim_space()
                log.info("retention.pruned", calls=pruned, pages_freed=freed,
                         settled_before=round(before))
            self._last_error = None
        except StoreError as exc:
            self._last_error = str(exc)
            log.warning("retention.failed", error=str(exc), pruned=pruned,
                        hint="tried again at the next pass")
        self._passes += 1
        self._last_pass_at = self._clock()
        return pruned
