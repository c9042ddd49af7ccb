"""Worker heartbeats: each running daemon keeps a row saying it is alive, and since when.

``callwatch status`` reads the rows instead of guessing from overdue polls whether a daemon
runs on this database: ``running`` (a recent beat), ``stale`` (a row whose beats stopped:
a killed or wedged daemon, or one whose process on this host is gone) or ``stopped`` (no row:
a clean stop removes it). The last error the process logged travels in the row too, so the
operator sees it without the journal.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio
import structlog

from worker import __version__
from worker.component import AnyComponent
from worker.health import progress_of
from worker.logs import LAST_ERROR
from worker.store.base import Heartbeat, Store, StoreError
from worker.store.planning import owner_is_dead

log = structlog.get_logger("worker.heartbeat")

BEAT_EVERY = 5.0  # seconds between two heartbeats of a running daemon
STALE_AFTER = 30.0  # a beat older than this: the daemon is not running (or is wedged)




@dataclass(frozen=True, kw_only=True, slots=True)
class DaemonState:
    """What ``status`` says about one heartbeat row."""

    state: str  # "running" or "stale"
    heartbeat: Heartbeat
    why: str | None = None  # for "stale": why it is not believed to run


def judge(heartbeats: Sequence[Heartbeat], now: float, host: str,
          is_dead: Callable[[str, str], bool] = owner_is_dead,
          stale_after: float = STALE_AFTER) -> list[DaemonState]:
    """Each row's state: ``stale`` when its last beat is older than ``stale_after`` or its
    process (on this host) is gone, else ``running``. Pure but for ``is_dead``."""
    found = []
    for beat in heartbeats:
        if is_dead(beat.owner, host):
            found.append(DaemonState(state="stale", heartbeat=beat, why="its process is gone"))
        elif now - beat.beat_at > stale_after:
            found.append(DaemonState(state="stale", heartbeat=beat,
                                     why="its heartbeat stopped"))
        else:
            found.append(DaemonState(state="running", heartbeat=beat))
    return found


def overall(states: Sequence[DaemonState]) -> str:
    """``running`` if any daemon runs, else ``stale`` if a row is left, else ``stopped``."""
    kinds = {s.state for s in states}
    return "running" if "running" in kinds else "stale" if kinds else "stopped"


def progress_at(components: Sequence[AnyComponent], mono_now: float,
                wall_now: float) -> float | None:
    """When every component last went round its loop (the oldest of them), as wall time."""
    times = progress_of(components).values()
    return wall_now - (mono_now - min(times)) if times else None


async def keep_heartbeat(store: Store, components: Sequence[AnyComponent],
                         every: float = BEAT_EVERY) -> None:
    """Write this worker's row every ``every`` seconds until cancelled.

    A failed write is logged and tried again at the next beat: a heartbeat must never stop
    the daemon (the store's own health is ``watch_store``'s to report).
    """
    started = time.time()
    host, pid = socket.gethostname(), os.getpid()
    await forget_the_dead(store, host)
    while True:
        now = time.time()
        error = LAST_ERROR.last
        beat = Heartbeat(owner=store.owner, host=host, pid=pid, version=__version__,
                         started_at=started, beat_at=now,
                         progress_at=progress_at(components, time.monotonic(), now),
                         last_error=error[1] if error else None,
                         last_error_at=error[0] if error else None)
        try:
            await store.beat(beat)
        except StoreError as exc:
            log.warning("heartbeat.failed", error=str(exc))
        await anyio.sleep(every)


async def forget_the_dead(store: Store, host: str) -> int:
    """At start: remove the rows of workers of this host whose process is gone (a SIGKILL
    left them), so ``status`` stops calling them stale once a daemon runs again."""
    gone = 0
    try:
        for beat in await store.heartbeats():
            if beat.owner != store.owner and owner_is_dead(beat.owner, host):
                await store.remove_heartbeat(beat.owner)
                gone += 1
    except StoreError as exc:
        log.warning("heartbeat.cleanup_failed", error=str(exc))
    return gone


async def remove_heartbeat(store: Store) -> None:
    """At a clean stop: say the daemon stopped (not stale). Never raises."""
    try:
        with anyio.move_on_after(5):
            await store.remove_heartbeat(store.owner)
    except StoreError as exc:
        log.warning("heartbeat.remove_failed", error=str(exc))
