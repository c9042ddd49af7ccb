"""What the API needs from the running daemon, as narrow Protocols.

The daemon's ``Runtime`` satisfies ``ApiRuntime`` structurally; tests hand in a real store with a
recording scheduler. Everything is read at request time (``runtime.config`` included), so a
SIGHUP that swaps the config rotates the bearer token and the Ultravox secret at once.

The relay and the archiver are typed optional parts (``None`` when not running): metrics read
their typed stats, health reads every component's ``progress()``. Nothing is probed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from worker.archive.archiver import ArchiverStats
from worker.archive.base import DownloadJob, DownloadProgress
from worker.component import AnyComponent
from worker.config import Config
from worker.health import ProbeCache
from worker.logbudget import LogBudget
from worker.looplag import LoopLagStats
from worker.scheduler import SchedulerStats
from worker.store.base import Store as ApiStore
from worker.webhooks.stats import RelayStats


class ApiScheduler(Protocol):
    """The scheduler's live counters and its wake-up hook."""

    @property
    def stats(self) -> SchedulerStats: ...

    def wake(self, provider: str | None = None) -> None: ...


S_co = TypeVar("S_co", covariant=True)


class StatsOf(Protocol[S_co]):
    """A running part whose typed stats the metrics read."""

    @property
    def stats(self) -> S_co: ...


class ApiArchiver(Protocol):
    """The archiver as the API sees it: typed stats, and the downloads under way."""

    @property
    def stats(self) -> ArchiverStats: ...

    def downloads(self) -> list[tuple[DownloadJob, DownloadProgress]]:
        """Every download under way and how far it has got, measured now."""
        ...


class ApiRuntime(Protocol):
    """The daemon's shared parts, as the API sees them."""

    @property
    def config(self) -> Config: ...

    @property
    def store(self) -> ApiStore: ...

    @property
    def scheduler(self) -> ApiScheduler: ...

    @property
    def relay(self) -> StatsOf[RelayStats] | None: ...

    @property
    def archiver(self) -> ApiArchiver | None: ...

    @property
    def loop_lag(self) -> LoopLagStats | None: ...

    @property
    def store_errors(self) -> Counter[str] | None:
        """Database refusals by operation (``worker.store_errors``), while the daemon runs."""
        ...

    @property
    def components(self) -> Sequence[AnyComponent]:
        """Every running component, for /healthz (progress) and the status line."""
        ...

    @property
    def started_wall(self) -> float:
        """When the daemon started (wall clock): overdue polls count from then at most."""
        ...


@dataclass(kw_only=True)
class ApiStats:
    """The API's own counters, exported by /metrics."""

    requests: Counter[tuple[str, int]] = field(default_factory=Counter)  # (route, status) -> n
    ultravox_webhooks: Counter[str] = field(default_factory=Counter)  # outcome -> n


@dataclass(kw_only=True)
class Context:
    """What every handler gets: the runtime, the API's counters and the wall clock."""

    runtime: ApiRuntime
    stats: ApiStats = field(default_factory=ApiStats)
    clock: Callable[[], float] = time.time  # injectable: webhook timestamps are wall time
    refusals: LogBudget = field(default_factory=LogBudget)  # warnings strangers can cause
    # /healthz is open to anyone: the store's probe (a write) runs at most once a second
    probes: ProbeCache = field(default_factory=lambda: ProbeCache(every=1.0))
