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
import urllib.request
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import structlog

from worker import __version__
from worker.api.server import ApiServer
from worker.archive.archiver import Archiver
from worker.archive.targets import archive_root
from worker.component import AnyComponent
from worker.config import Config, ConfigError, load
from worker.discovery import Discovery
from worker.heartbeat import keep_heartbeat, remove_heartbeat
from worker.http_aio import DEFAULT, AioClient, Kind, kind_from
from worker.http_pool import ShardedTransport
from worker.looplag import LoopLagMonitor, LoopLagStats
from worker.notify import Notifier
from worker.providers import build_provider
from worker.providers.base import Provider
from worker.reconcile import Policy
from worker.retention import Retention
from worker.scheduler import Lane, Scheduler
from worker.store.base import Store, StoreError
from worker.store.factory import open_configured
from worker.store_errors import StoreErrors
from worker.supervise import status_line, supervise
from worker.webhooks.relay import Relay

log = structlog.get_logger("worker.daemon")


async def _close(store: Store) -> None:
    """Hand back our leases if the database lets us, then close it: always, whatever the
    database's state, or its thread would keep a stopped daemon alive (SIGTERM must work)."""
    with anyio.CancelScope(shield=True):
        await remove_heartbeat(store)
        try:
            with anyio.move_on_after(5):
                await store.release_leases()
        except StoreError as exc:  # they run out by themselves (lease_seconds)
            log.error("store.release_failed", database=store.location, error=str(exc))  # noqa: TRY400 - expected, no traceback
        finally:
            await store.close()


STORE_PROBE_EVERY = 5.0  # seconds between two health probes of the database
STORE_REPEAT_EVERY = 60.0  # a problem that lasts is logged again this often


async def watch_store(store: Store) -> None:
    """Probe the database every few seconds; say at error level when it was deleted or
    replaced under us, refuses writes, or writes keep failing (and when it recovers).

    The API's /healthz and the watchdog read the same ``probe()``; this makes the journal
    say why, even without the API.
    """
    problem: str | None = None
    logged = 0.0
    while True:
        await anyio.sleep(STORE_PROBE_EVERY)
        health = await store.probe()
        now = time.monotonic()
        if health.problem is not None and (health.problem != problem
                                           or now - logged >= STORE_REPEAT_EVERY):
            log.error("store.unhealthy", database=store.location, problem=health.problem)
            logged = now
        elif health.ok and problem is not None:
            log.info("store.healthy_again", database=store.location)
        problem = health.problem


async def recount_calls(store: Store) -> None:
    """Once after start, in the background: repair the maintained call counts if they drifted
    (``Store.recount_calls``; it reads every call, seconds at a million). A failure here is
    only logged: the counts feed ``status`` and metrics, never a decision."""
    try:
        await store.recount_calls()
    except StoreError as exc:
        log.warning("store.recount_failed", error=str(exc))


def lanes_for(config: Config, client: httpx.AsyncClient) -> dict[str, Lane]:
    root = archive_root(config)
    return {
        name: Lane(provider=build_provider(provider, client),
                   policy=Policy(tracking=provider.tracking, archiving=root is not None,
                                 archive_root=root),
                   concurrency=provider.concurrency, rate_limit=provider.rate_limit)
        for name, provider in config.providers.items()
    }


def http_client(config: Config, kind: Kind = DEFAULT) -> httpx.AsyncClient:
    """One client per process: connection reuse across every poll and download.

    ``aiohttp`` (``worker.http_aio``): aiohttp's pool under httpx's API, environment proxies
    honoured. ``httpx``: its connections live in small pools (``worker.http_pool``): in one
    pool of about a hundred connections httpcore spends 20 to 40 ms of CPU per request.
    Under a proxy from the environment (HTTP_PROXY...) the stock pool stays, as httpx
    applies environment proxies only to a transport of its own making.
    """
    slots = sum(p.concurrency for p in config.providers.values())
    if kind == "aiohttp":
        return AioClient(max_connections=slots + 64, timeout=httpx.Timeout(15.0, connect=5.0),
                         headers={"User-Agent": f"callwatch/{__version__}"},
                         follow_redirects=False)
    sharded = None if urllib.request.getproxies() else ShardedTransport(
        max_connections=slots + 64)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(15.0, connect=5.0),
        limits=httpx.Limits(max_connections=slots + 64, max_keepalive_connections=slots + 64),
        headers={"User-Agent": f"callwatch/{__version__}"},
        follow_redirects=False,
        transport=sharded,
    )


@dataclass(kw_only=True)
class Runtime:
    """What the components share: handed to each feature when the daemon is assembled."""

    config: Config
    store: Store
    client: httpx.AsyncClient
    scheduler: Scheduler
    relay: Relay | None = None  # set at assembly; the API reads its stats and progress
    archiver: Archiver | None = None  # likewise, when archiving is on
    retention: Retention | None = None  # set at assembly
    components: list[AnyComponent] = field(default_factory=list)  # every part, once assembled
    started_wall: float = field(default_factory=time.time)
    loop_lag: LoopLagStats | None = None
    store_errors: Counter[str] | None = None  # refusals by operation, while the daemon runs

    @property
    def providers(self) -> dict[str, Provider]:
        return {name: lane.provider for name, lane in self.scheduler.lanes.items()}


class Daemon:
    """Assembles the components from a config and runs them until told to stop."""

    def __init__(self, config: Config, *, environ: Mapping[str, str] | None = None,
                 early_signals: list[int] | None = None) -> None:
        self.config = config
        self.environ = dict(environ) if environ is not None else {}
        self.notifier = Notifier.from_environ(self.environ)
        self._early = early_signals if early_signals is not None else []

    async def run(self) -> None:
        self._stop = anyio.Event()
        self._second = anyio.Event()
        store = await open_configured(self.config)
        try:
            released = await store.recover()
            errors = StoreErrors()
            async with http_client(self.config, kind_from(self.environ)) as client:
                scheduler = Scheduler(store, lanes_for(self.config, client),
                                      lanes_for=partial(lanes_for, client=client))
                runtime = Runtime(config=self.config, store=store, client=client,
                                  scheduler=scheduler, store_errors=errors.by_operation)
                with errors.counting():
                    await self._run_components(runtime, released)
        finally:
            await _close(store)
            self.notifier.close()

    async def _run_components(self, runtime: Runtime, released: int) -> None:
        lag = LoopLagMonitor()
        runtime.loop_lag = lag.stats
        components: list[AnyComponent] = [runtime.scheduler, lag]
        # Always: it keeps the outbox cursor current even with no [[webhooks]] (so an endpoint
        # added later gets new events, not the whole history), and --webhook URLs need it.
        runtime.relay = Relay.attach(runtime.config, runtime.store, runtime.scheduler,
                                     kind=kind_from(self.environ))
        components.append(runtime.relay)
        if runtime.config.worker.archiving:
            runtime.archiver = archiver = Archiver.attach(
                runtime.config, runtime.store, runtime.scheduler, runtime.client)
            archiver.on_commit(runtime.relay.wake)  # its events go out without waiting a tick
            components.append(archiver)
        discovery = Discovery.attach(runtime.config, runtime.store, runtime.scheduler,
                                     runtime.client)
        if discovery is not None:
            components.append(discovery)
        runtime.retention = Retention.attach(runtime.config, runtime.store)
        components.append(runtime.retention)
        if runtime.config.api.listen:  # last: it reports on the others, and starts once they run
            components.append(ApiServer(runtime))
        self._components = runtime.components = components
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._watch_signals, runtime)
            outer.start_soon(watch_store, runtime.store)
            outer.start_soon(keep_heartbeat, runtime.store, components)
            outer.start_soon(recount_calls, runtime.store)
            async with anyio.create_task_group() as inner:
                for component in components:
                    await inner.start(component.run)
                outer.start_soon(partial(
                    supervise, self.notifier, runtime.store, components, self._stop.is_set,
                    uncommitted_since=lambda: runtime.scheduler.stats.uncommitted_since,
                    providers=lambda: list(runtime.config.providers),
                    started_wall=runtime.started_wall))
                log.info("daemon.ready", database=runtime.store.location,
                         providers=sorted(runtime.config.providers), leases_recovered=released,
                         components=[c.name for c in components])
                self.notifier.ready(await status_line(runtime.store, components))
                await self._stop.wait()
                started = time.monotonic()
                grace = self.config.worker.drain_grace
                log.info("daemon.stopping", grace=grace)
                self.notifier.stopping(f"draining in-flight work (up to {grace:.0f} s)")
                for component in components:
                    component.stop()
                outer.start_soon(self._deadline, inner.cancel_scope, grace)
            log.info("daemon.stopped", drained_in=round(time.monotonic() - started, 3))
            outer.cancel_scope.cancel()

    async def _deadline(self, scope: anyio.CancelScope, grace: float) -> None:
        """Cancel the components when the grace runs out or a second signal comes."""
        with anyio.move_on_after(grace):
            await self._second.wait()
        if not scope.cancel_called:
            log.warning("daemon.drain_cut_short",
                        reason="second signal" if self._second.is_set() else "grace expired")
        scope.cancel()

    async def _watch_signals(self, runtime: Runtime) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            if self._early:
                log.info("daemon.signal", signal=signal.Signals(self._early[0]).name,
                         during="start-up")
                self._stop.set()
            async for signum in signals:
                log.info("daemon.signal", signal=signal.Signals(signum).name)
                if signum == signal.SIGHUP:
                    if not self._stop.is_set():
                        await self._reload(runtime)
                elif self._stop.is_set():
                    self._second.set()
                else:
                    self._stop.set()

    async def _reload(self, runtime: Runtime) -> None:
        """SIGHUP: re-read the config; apply what can change live, keep the old one if bad.

        A reload is held to ``check-config``'s standard (``preflight`` too), so that the
        unit's ``ExecReload=`` (check-config, then SIGHUP) and the daemon always agree. A
        rejection stays in the STATUS= line until a reload succeeds.
        """
        self.notifier.reloading()
        try:
            new = await anyio.to_thread.run_sync(_load_checked, self.config.source, self.environ)
        except ConfigError as exc:
            log.error("config.reload_rejected", problems=exc.problems,  # noqa: TRY400 - a user mistake, not a crash: no traceback
                      hint="the previous configuration stays in force")
            more = f" (+{len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
            self.notifier.note = (f"reload rejected: {exc.problems[0]}{more}; "
                                  f"the previous config stays in force")
        else:
            self.notifier.note = None
            for what in restart_needed(self.config, new):
                log.warning("config.restart_needed", setting=what,
                            hint="this change takes effect at the next restart")
            changed = changed_keys(self.config.raw, new.raw)
            self.config = runtime.config = new
            for component in self._components:
                component.reconfigure(new)
            log.info("config.reloaded", source=str(new.source), webhooks=len(new.webhooks),
                     providers=sorted(new.providers), changed=changed)
        self.notifier.ready(await status_line(runtime.store, self._components))


def _load_checked(path: Path, environ: Mapping[str, str]) -> Config:
    """``load`` plus ``check-config``'s checks of the machine: what a reload accepts."""
    from worker.preflight import preflight

    config = load(path, environ)
    if problems := preflight(config):
        raise ConfigError(problems)
    return config


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose value differs between two parsed TOML documents (added or removed too).

    Read from the file's own tables, so secrets show only as the names of their variables or
    files, never as values: ``["tracking.poll_interval", "webhooks[1]"]``.
    """
    changed: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        name = f"{prefix}.{key}" if prefix else str(key)
        before, after = old.get(key), new.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            changed += changed_keys(before, after, name)
        elif (isinstance(before, list) and isinstance(after, list) and len(before) == len(after)
              and all(isinstance(t, dict) for t in [*before, *after])):
            for index, (one, two) in enumerate(zip(before, after, strict=True)):
                changed += changed_keys(one, two, f"{name}[{index}]")
        elif before != after:
            changed.append(name)
    return changed


def restart_needed(old: Config, new: Config) -> list[str]:
    """Settings a running daemon cannot change: where its state lives, what it listens on."""
    changed = []
    if old.worker.database != new.worker.database:
        changed.append("worker.database")
    if old.worker.archive_dir != new.worker.archive_dir:
        changed.append("worker.archive_dir")
    if old.worker.archive != new.worker.archive:
        changed.append("worker.archive")
    if old.api.listen != new.api.listen:
        changed.append("api.listen")
    if old.archive != new.archive:
        changed.append("archive")
    if old.delivery.max_connections != new.delivery.max_connections:
        changed.append("delivery.max_connections")
    if set(old.providers) != set(new.providers):
        changed.append("providers (added or removed)")
    for name, provider in new.providers.items():
        before = old.providers.get(name)
        if before is not None and provider.discovery.enabled and not before.discovery.enabled:
            changed.append(f"providers.{name}.discover (turned on)")
    return changed
