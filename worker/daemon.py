"""The daemon: one anyio task group holding every long-running part, plus signal handling.

Stopping is structured: the first SIGTERM/SIGINT asks every component to stop claiming work
and gives in-flight work ``drain_grace`` seconds to finish and be committed; a second signal
(or the grace running out) cancels the group. Either way the database stays consistent:
every write is one transaction, and leases of unfinished work run out so the next start
picks it up.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from typing import Protocol

import anyio
import httpx
import structlog
from anyio.abc import TaskStatus

from worker import __version__
from worker.config import Config
from worker.providers import build_provider
from worker.providers.base import Provider
from worker.reconcile import Policy
from worker.scheduler import Lane, Scheduler
from worker.store.sqlite import SQLiteStore

log = structlog.get_logger("worker.daemon")

DEFAULT_DRAIN_GRACE = 20.0


class Component(Protocol):
    """A long-running part of the daemon."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        ...

    def stop(self) -> None:
        """Stop taking new work; ``run`` returns once in-flight work is done."""
        ...


def lanes_for(config: Config, client: httpx.AsyncClient) -> dict[str, Lane]:
    archiving = config.worker.archive_dir is not None
    return {
        name: Lane(provider=build_provider(provider, client),
                   policy=Policy(tracking=provider.tracking, archiving=archiving),
                   concurrency=provider.concurrency, rate_limit=provider.rate_limit)
        for name, provider in config.providers.items()
    }


def http_client(config: Config) -> httpx.AsyncClient:
    """One client per process: connection reuse across every poll and download."""
    slots = sum(p.concurrency for p in config.providers.values())
    return httpx.AsyncClient(
        timeout=httpx.Timeout(15.0, connect=5.0),
        limits=httpx.Limits(max_connections=slots + 64, max_keepalive_connections=slots + 64),
        headers={"User-Agent": f"callwatch/{__version__}"},
        follow_redirects=False,
    )


@dataclass(kw_only=True)
class Runtime:
    """What the components share: handed to each feature when the daemon is assembled."""

    config: Config
    store: SQLiteStore
    client: httpx.AsyncClient
    scheduler: Scheduler

    @property
    def providers(self) -> dict[str, Provider]:
        return {name: lane.provider for name, lane in self.scheduler.lanes.items()}


class Daemon:
    """Assembles the components from a config and runs them until told to stop."""

    def __init__(self, config: Config, *, drain_grace: float = DEFAULT_DRAIN_GRACE,
                 early_signals: list[int] | None = None) -> None:
        self.config = config
        self.drain_grace = drain_grace
        self._early = early_signals if early_signals is not None else []

    async def run(self) -> None:
        self._stop = anyio.Event()
        self._second = anyio.Event()
        store = await SQLiteStore.open(self.config.worker.database)
        try:
            released = await store.recover()
            async with http_client(self.config) as client:
                scheduler = Scheduler(store, lanes_for(self.config, client))
                runtime = Runtime(config=self.config, store=store, client=client,
                                  scheduler=scheduler)
                await self._run_components(runtime, released)
        finally:
            await store.close()

    async def _run_components(self, runtime: Runtime, released: int) -> None:
        components: list[Component] = [runtime.scheduler]
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._watch_signals)
            async with anyio.create_task_group() as inner:
                for component in components:
                    await inner.start(component.run)
                log.info("daemon.ready", database=str(runtime.store.path),
                         providers=sorted(runtime.config.providers), leases_recovered=released)
                await self._stop.wait()
                started = time.monotonic()
                log.info("daemon.stopping", grace=self.drain_grace)
                for component in components:
                    component.stop()
                outer.start_soon(self._deadline, inner.cancel_scope)
            log.info("daemon.stopped", drained_in=round(time.monotonic() - started, 3))
            outer.cancel_scope.cancel()

    async def _deadline(self, scope: anyio.CancelScope) -> None:
        """Cancel the components when the grace runs out or a second signal comes."""
        with anyio.move_on_after(self.drain_grace):
            await self._second.wait()
        if not scope.cancel_called:
            log.warning("daemon.drain_cut_short",
                        reason="second signal" if self._second.is_set() else "grace expired")
        scope.cancel()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            if self._early:
                log.info("daemon.signal", signal=signal.Signals(self._early[0]).name,
                         during="start-up")
                self._stop.set()
            async for signum in signals:
                log.info("daemon.signal", signal=signal.Signals(signum).name)
                if self._stop.is_set():
                    self._second.set()
                else:
                    self._stop.set()

