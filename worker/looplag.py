"""How late the event loop runs callbacks: a small task that sleeps and measures oversleep.

Every ``TICK`` seconds it asks for ``sleep(TICK)`` and records how much longer the sleep took:
that excess is how long some callback held the loop (a parse of a huge reply, a synchronous
call that should have gone to a thread). ``callwatch_event_loop_lag_seconds`` is the largest
excess over the last ``WINDOW`` seconds, so a scrape every 15 s still sees a 200 ms stall.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskStatus

from worker.config import Config

TICK = 0.1
WINDOW = 60.0


@dataclass(kw_only=True)
class LoopLagStats:
    """Recent oversleeps as ``(monotonic time, seconds late)``, oldest first."""

    samples: deque[tuple[float, float]] = field(default_factory=deque)
    window: float = WINDOW

    def add(self, at: float, late: float) -> None:
        """Record one oversleep and forget the ones older than the window."""
        self.samples.append((at, late))
        while self.samples and self.samples[0][0] < at - self.window:
            self.samples.popleft()

    def worst(self) -> float:
        """The largest oversleep within the window (0 when none was measured)."""
        return max((late for _, late in self.samples), default=0.0)


class LoopLagMonitor:
    """A daemon component measuring event-loop lag until ``stop()``."""

    name = "loop_lag"

    def __init__(self, *, tick: float = TICK) -> None:
        self._tick = tick
        self._stopping = anyio.Event()
        self.stats = LoopLagStats()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while not self._stopping.is_set():
            before = time.monotonic()
            with anyio.move_on_after(self._tick):
                await self._stopping.wait()
            after = time.monotonic()
            if not self._stopping.is_set():
                self.stats.add(after, max(0.0, after - before - self._tick))

    def stop(self) -> None:
        self._stopping.set()

    def progress(self) -> float | None:
        return None  # a measurement, not work to vouch for

    def describe(self) -> str:
        return ""

    def reconfigure(self, config: Config) -> None:
        del config  # nothing configurable
