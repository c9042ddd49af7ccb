"""What the daemon holds: one Protocol for every long-running part.

The scheduler, the webhook relay, the archiver and the API server (and whatever comes next,
discovery) each satisfy ``Component`` structurally. The daemon starts, stops, reconfigures and
describes them through it; health and the watchdog read ``progress()``; metrics read each
part's ``stats``, typed per part (``SchedulerStats``, ``RelayStats``, ...). Nothing probes a
component with ``getattr``: a part that does not fit the Protocol fails mypy, not a scrape.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

import anyio
from anyio.abc import TaskStatus

from worker.config import Config

StatsT_co = TypeVar("StatsT_co", covariant=True)


class Component(Protocol[StatsT_co]):
    """A long-running part of the daemon."""

    @property
    def name(self) -> str:
        """Short and stable (``scheduler``, ``relay``): used in logs, health and metrics."""
        ...

    @property
    def stats(self) -> StatsT_co:
        """Live counters, typed per component; read by metrics and ``status``."""
        ...

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Work until ``stop()``; ``task_status.started()`` once it takes work."""
        ...

    def stop(self) -> None:
        """Stop taking new work; ``run`` returns once in-flight work is done."""
        ...

    def progress(self) -> float | None:
        """When the part last made progress (monotonic), its writer included; None for a part
        that has no loop to vouch for (the API server). The watchdog and /healthz read it."""
        ...

    def describe(self) -> str:
        """A fragment of the systemd STATUS= line ("" for nothing to say)."""
        ...

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: apply what can change live from the new config."""
        ...


AnyComponent = Component[object]
