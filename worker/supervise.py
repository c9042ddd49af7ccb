"""Tells systemd how the daemon is doing: STATUS= lines and watchdog pings.

The watchdog ping is a claim that the daemon works, so it is sent only while every component
that reports progress has gone round its loop recently. A wedged scheduler (a lane stuck on a
lock, a writer that cannot commit) stops the pings and lets systemd restart us, which is the
point of ``WatchdogSec=``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import structlog

from worker.notify import Notifier
from worker.store.base import CallStore

log = structlog.get_logger("worker.supervise")

STATUS_EVERY = 5.0


def stalled(components: Sequence[Any], now: float, stale_after: float) -> list[str]:
    """Names of components whose ``progress()`` is older than ``stale_after`` seconds."""
    late = []
    for component in components:
        progress: Callable[[], float] | None = getattr(component, "progress", None)
        if progress is not None and now - progress() > stale_after:
            late.append(type(component).__name__)
    return late


async def status_line(store: CallStore, components: Sequence[Any]) -> str:
    """``tracking 1234 calls (12 live, ...), 3 polls in flight, 12 deliveries pending``."""
    counts = await store.counts()
    states: dict[str, int] = {}
    for (_, state), n in counts.calls_by_state.items():
        states[state] = states.get(state, 0) + n
    parts = [f"tracking {counts.active} calls ({states.get('pending', 0)} pending, "
             f"{states.get('live', 0)} live, {states.get('ended', 0)} settling)"]
    for component in components:
        describe: Callable[[], str] | None = getattr(component, "describe", None)
        if describe is not None:
            parts.append(describe())
    return ", ".join(parts)


async def supervise(notifier: Notifier, store: CallStore, components: Sequence[Any],
                    stopping: Callable[[], bool] = lambda: False) -> None:
    """Run until cancelled: ping the watchdog while healthy, refresh STATUS= every 5 s.

    While stopping, the loops end one by one on purpose; the drain has its own deadline, so
    the pings go on until the process exits.
    """
    interval = notifier.watchdog_interval
    # Without progress for a whole ping interval, something is stuck: stop vouching for it.
    stale_after = max(10.0, interval or 0.0)
    next_status = 0.0
    was_stalled: list[str] = []
    while True:
        now = time.monotonic()
        late = [] if stopping() else stalled(components, now, stale_after)
        if late and late != was_stalled:
            log.error("daemon.stalled", components=late, seconds=stale_after,
                      watchdog="withheld" if interval else "off")
        was_stalled = late
        if interval and not late:
            notifier.send(WATCHDOG=1)
        if now >= next_status:
            next_status = now + STATUS_EVERY
            try:
                notifier.send(STATUS=await status_line(store, components))
            except Exception:
                log.exception("daemon.status_failed")
        await anyio.sleep(min(interval or STATUS_EVERY, STATUS_EVERY))
