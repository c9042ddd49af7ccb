"""Tells systemd how the daemon is doing: STATUS= lines and watchdog pings.

The watchdog ping is a claim that the daemon works, so it is sent only while
``worker.health.judge`` says so: the same verdict ``/healthz`` gives. A wedged scheduler (a
lane stuck on a lock, a writer that cannot commit), a poll overdue far too long or a
database that stops answering stops the pings and lets systemd restart us, which is the point
of ``WatchdogSec=``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import anyio
import structlog

from worker.component import AnyComponent
from worker.health import Limits, ProbeCache, gather, judge
from worker.notify import Notifier
from worker.store.base import Store

log = structlog.get_logger("worker.supervise")

STATUS_EVERY = 5.0
PROBE_EVERY = 5.0  # the store's probe takes the write lock for a moment: not at every ping


async def status_line(store: Store, components: Sequence[AnyComponent]) -> str:
    """``tracking 1234 calls (12 live, ...), 3 polls in flight, 12 deliveries pending``."""
    counts = await store.counts()
    states: dict[str, int] = {}
    for (_, state), n in counts.calls_by_state.items():
        states[state] = states.get(state, 0) + n
    parts = [f"tracking {counts.active} calls ({states.get('pending', 0)} pending, "
             f"{states.get('live', 0)} live, {states.get('ended', 0)} settling)"]
    parts.extend(text for component in components if (text := component.describe()))
    return ", ".join(parts)


async def supervise(notifier: Notifier, store: Store, components: Sequence[AnyComponent],
                    stopping: Callable[[], bool] = lambda: False, *,
                    uncommitted_since: Callable[[], float | None] = lambda: None,
                    providers: Callable[[], Iterable[str]] = tuple,
                    started_wall: float | None = None) -> None:
    """Run until cancelled: ping the watchdog while healthy, refresh STATUS= every 5 s.

    While stopping, the loops end one by one on purpose; the drain has its own deadline, so
    the pings go on until the process exits.
    """
    interval = notifier.watchdog_interval
    # Without progress for a whole ping interval, something is stuck: stop vouching for it.
    limits = replace(Limits(), progress=max(10.0, interval or 0.0))
    started = time.time() if started_wall is None else started_wall
    next_status = 0.0
    probes = ProbeCache(every=PROBE_EVERY)
    was: tuple[str, ...] = ()
    while True:
        problems: tuple[str, ...] = ()
        if not stopping():
            readings = await gather(store, components, providers=providers(),
                                    uncommitted_since=uncommitted_since(),
                                    started_wall=started, probes=probes)
            problems = judge(readings, limits).problems
        if problems and not was:  # on the transition only: the texts carry ages in seconds
            log.error("daemon.unhealthy", problems=list(problems),
                      watchdog="withheld" if interval else "off")
        elif was and not problems:
            log.info("daemon.healthy_again")
        was = problems
        if interval and not problems:
            notifier.send(WATCHDOG=1)
        now = time.monotonic()
        if now >= next_status:
            next_status = now + STATUS_EVERY
            try:
                notifier.send(STATUS=await status_line(store, components))
            except Exception:
                log.exception("daemon.status_failed")
        await anyio.sleep(min(interval or STATUS_EVERY, STATUS_EVERY))
