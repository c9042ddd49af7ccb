"""What the API needs from the running daemon, as narrow Protocols.

The daemon's ``Runtime`` satisfies ``ApiRuntime`` structurally; tests hand in a real store with a
recording scheduler. Everything is read at request time (``runtime.config`` included), so a
SIGHUP that swaps the config rotates the bearer token and the Ultravox secret at once.

The webhook relay and the archiver are optional attributes (``relay``, ``archiver``), read with
``getattr``: the API renders what exists and skips what does not.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from worker.config import Config
from worker.scheduler import SchedulerStats
from worker.store.base import Store as ApiStore


class ApiScheduler(Protocol):
    """The scheduler's live counters and its wake-up hook."""

    @property
    def stats(self) -> SchedulerStats: ...

    def wake(self, provider: str | None = None) -> None: ...


class ApiRuntime(Protocol):
    """The daemon's shared parts, as the API sees them."""

    @property
    def config(self) -> Config: ...

    @property
    def store(self) -> ApiStore: ...

    @property
    def scheduler(self) -> ApiScheduler: ...


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
