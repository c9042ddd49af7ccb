"""Lists providers' calls and tracks the new ones: the daemon's discovery component.

For each provider with ``discover = true`` one loop, every ``discover_interval``:

    claim the provider's discovery lease (another worker holds it: skip this round)
    window = sweep_window(floor, durable mark, now)            (discovery_plan, pure)
    sweep the list page by page, tracking each page's calls    (discovery_sweep)
        with metadata {} through the store's idempotent track_many,
        saving the mark after every page when the provider lists oldest first
    mark = mark_after(...); release the lease

A discovered call is then an ordinary tracked call: the scheduler polls it (woken here when a
sweep tracked something), and its events, recordings and webhooks follow as for ``track``.
Tracking a call the user also tracks changes nothing: the store ignores the second insert.

The component reports no ``progress()``: it sleeps a whole interval between sweeps, which the
watchdog would read as stalled.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import anyio
import httpx
import structlog
from anyio.abc import TaskStatus

from worker.config import Config
from worker.config_discovery import DiscoveryConfig
from worker.discovery_plan import floor_of, mark_after, sweep_window
from worker.discovery_sweep import MAX_PAGES, Record, SweepReport, sweep
from worker.providers.listing import CallLister, ListedCall, make_lister
from worker.ratelimit import TokenBucket
from worker.scheduler import Scheduler
from worker.store.base import NewCall, Store

log = structlog.get_logger("worker.discovery")


@dataclass(frozen=True, kw_only=True, slots=True)
class DiscoveryLane:
    """One provider to discover: its list reader, the lane's bucket, and its settings."""

    lister: CallLister
    bucket: TokenBucket  # the polling lane's own object: shared pacing and 429 pause
    config: DiscoveryConfig


def recorder(store: Store, provider: str, clock: Callable[[], float]) -> Record:
    """Track a page's calls in one transaction, with metadata ``{}``; return how many new."""

    async def record(calls: Sequence[ListedCall]) -> int:
        now = clock()
        return await store.track_many([(NewCall(provider=provider, call_id=c.call_id), now)
                                       for c in calls])

    return record


@dataclass(frozen=True, kw_only=True, slots=True)
class DiscoveryStats:
    """What discovery has done since start, for metrics and ``status``."""

    tracked: int  # calls newly tracked
    sweeps: Mapping[str, SweepReport]  # provider -> its last sweep's report


class Discovery:
    """Sweeps each configured provider's list every ``discover_interval`` until ``stop()``.

    A ``Component``; its ``progress()`` is None: it sleeps a whole interval between sweeps, which
    a watchdog would read as a stall, and a failing sweep is retried and logged, never silent.
    """

    name = "discovery"

    def __init__(self, store: Store, lanes: Mapping[str, DiscoveryLane], *,
                 clock: Callable[[], float] = time.time,
                 on_new: Callable[[str], None] | None = None,
                 max_pages: int = MAX_PAGES) -> None:
        self._store = store
        self._lanes = dict(lanes)
        self._clock = clock
        self._on_new = on_new
        self._max_pages = max_pages
        self._stopping = False
        self._stop = anyio.Event()
        self._lost: set[str] = set()  # providers whose sweep lost its lease
        self.sweeps: dict[str, SweepReport] = {}  # provider -> the last sweep's report
        self.tracked = 0  # calls newly tracked since start

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            for name in self._lanes:
                tg.start_soon(self._loop, name)
            task_status.started()

    def stop(self) -> None:
        """End the sweeps at their next page; the loops then return."""
        self._stopping = True
        self._stop.set()

    def describe(self) -> str:
        """A fragment for the systemd STATUS= line."""
        return f"{self.tracked} calls discovered"

    @property
    def stats(self) -> DiscoveryStats:
        return DiscoveryStats(tracked=self.tracked, sweeps=dict(self.sweeps))

    def progress(self) -> float | None:
        return None

    @classmethod
    def attach(cls, config: Config, store: Store, scheduler: Scheduler,
               client: httpx.AsyncClient) -> Discovery | None:
        """The component for every provider with ``discover = true``; None when there is none.

        Each lane takes the scheduler's token bucket of its provider (not a copy).
        """
        lanes = {
            name: DiscoveryLane(lister=make_lister(provider, client),
                                bucket=scheduler.bucket(name), config=provider.discovery)
            for name, provider in config.providers.items() if provider.discovery.enabled
        }
        if not lanes:
            return None
        return cls(store, lanes, on_new=scheduler.wake)

    def reconfigure(self, config: Config) -> None:
        """New settings (SIGHUP) for providers discovered since start; others need a restart.

        ``discover = false`` on reload pauses that provider's sweeps.
        """
        for name, lane in self._lanes.items():
            provider = config.providers.get(name)
            settings = provider.discovery if provider is not None else DiscoveryConfig()
            self._lanes[name] = replace(lane, config=settings)

    async def _loop(self, name: str) -> None:
        while not self._stopping:
            lane = self._lanes[name]
            if lane.config.enabled:
                try:
                    await self.sweep_once(name)
                except Exception:  # a store hiccup must not end discovery for good
                    log.exception("discovery.crashed", provider=name)
            with anyio.move_on_after(lane.config.interval):
                await self._stop.wait()

    async def sweep_once(self, name: str) -> SweepReport | None:
        """One leased sweep of ``name``; None when another worker holds the lease."""
        lane = self._lanes[name]
        now = self._clock()
        state = await self._store.claim_discovery(name, now)
        if state is None:
            log.debug("discovery.leased_elsewhere", provider=name)
            return None
        try:
            floor = floor_of(lane.config.since, state.first_ran_at)
            window = sweep_window(floor=floor, mark=state.mark, now=now)
            ordered = lane.lister.ordered

            async def save_progress(report: SweepReport) -> None:
                # Renews the lease; for a provider listing oldest first, also keeps what a
                # restart in the middle of this sweep would otherwise list again.
                mark = mark_after(old=state.mark, window=window, complete=False,
                                  ordered=ordered, newest_read=report.newest_read)
                if not await self._store.advance_discovery(name, mark, self._clock()):
                    self.stop_sweep(name)

            report = await sweep(lane.lister, lane.bucket, window,
                                 recorder(self._store, name, self._clock),
                                 max_pages=self._max_pages, on_page=save_progress,
                                 stopping=lambda: self._stopping or name in self._lost)
            mark = mark_after(old=state.mark, window=window, complete=report.complete,
                              ordered=ordered, newest_read=report.newest_read)
            await self._store.advance_discovery(name, mark, self._clock())
        finally:
            self._lost.discard(name)
            with anyio.CancelScope(shield=True):
                await self._store.release_discovery(name)
        self.sweeps[name] = report
        self.tracked += report.new
        log.info("discovery.swept", provider=name, pages=report.pages, found=report.found,
                 new=report.new, skipped=report.skipped, complete=report.complete,
                 since=window.since)
        if report.new and self._on_new is not None:
            self._on_new(name)
        return report

    def stop_sweep(self, name: str) -> None:
        """The lease was lost (taken over after it ran out): end this sweep at the next page."""
        log.warning("discovery.lease_lost", provider=name)
        self._lost.add(name)
