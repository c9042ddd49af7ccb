"""The archiver: the daemon component that fetches recordings before their links expire.

    wake (a poll committed) -> claim due jobs, earliest link expiry first
        -> one Attempt per job, at most ``[archive] concurrency`` at once
        -> Archived / ArchiveFailed: store.apply_archive_result (state + events, one txn)
           Retry: back off (2 s, x3 each time, up to an hour) until max_attempts is spent
           Pause: stop claiming; probe the target every few seconds; resume when it works

* Jobs live in the database, so memory holds only the ones in flight and a restart resumes
  them; a recording in many snapshots is one row, hence one download.
* The target (worker/archive/target.py: a folder, a bucket) is built outside and handed in.
  A full disk, a missing bucket or refused credentials are not the recording's fault: its
  attempt is not counted and nothing is claimed until a probe object can be stored again.
  ``status`` shows the pause (``archive_state``), the log shouts ``archive.paused``.
* ``stop()`` stops claiming; downloads in flight finish (the daemon's drain grace bounds
  that) and a cancelled one is aborted; leftovers of a killed run go at the next start.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
import httpx
import structlog
from anyio.abc import TaskGroup, TaskStatus
from structlog.typing import FilteringBoundLogger

from worker.archive.attempt import Attempt, Outcome, Pause, Retry, Tools
from worker.archive.base import DownloadJob, DownloadProgress
from worker.archive.target import ArchiveTarget, TargetError
from worker.archive.targets import open_target
from worker.config import Config
from worker.config_sections import ArchiveConfig
from worker.reconcile import Archived, ArchiveFailed
from worker.scheduler import Lane, Scheduler
from worker.store.base import DownloadStore
from worker.store.errors import PermanentStoreError
from worker.store.retry import until_written

log = structlog.get_logger("worker.archive")
T = TypeVar("T")

RETRY_BASE = 2.0
RETRY_FACTOR = 3.0
RETRY_MAX = 3600.0
PROBE_INTERVAL = 5.0
IDLE_WAIT = 1.0
BUSY_WAIT = 0.2  # a poll holds the call for a moment: settle again after this
PROGRESS_EVERY = 3.0  # seconds between two writes of download progress to the database


def retry_delay(failures: int, *, base: float, jitter: float) -> float:
    """Back-off after ``failures`` failed attempts; ``jitter`` in [0, 1) spreads it +-10 %."""
    delay = min(RETRY_MAX, base * RETRY_FACTOR ** max(0, failures - 1))
    return delay * (0.9 + 0.2 * jitter)


@dataclass(kw_only=True)
class ArchiverStats:
    """Live counters for ``status`` lines and metrics."""

    archived: int = 0
    archive_failed: int = 0
    bytes: int = 0
    in_flight: int = 0
    paused: str | None = None
    last_progress: float = field(default_factory=time.monotonic)  # the claim loop went round


class Archiver:
    """Archives due recordings until ``stop()``; then lets in-flight downloads finish."""

    name = "archiver"

    def __init__(self, *, store: DownloadStore, lanes: Mapping[str, Lane],
                 client: httpx.AsyncClient, target: ArchiveTarget, config: ArchiveConfig,
                 clock: Callable[[], float] = time.time, rng: Callable[[], float] = random.random,
                 retry_base: float = RETRY_BASE, probe_interval: float = PROBE_INTERVAL,
                 idle_wait: float = IDLE_WAIT, progress_every: float = PROGRESS_EVERY) -> None:
        self._store = store
        self._lanes = lanes  # the scheduler's own mapping: SIGHUP changes show up here
        self._config = config
        self._clock = clock
        self._rng = rng
        self._retry_base = retry_base
        self._probe_interval = probe_interval
        self._idle_wait = idle_wait
        self._progress_every = progress_every
        self.target = target
        self._opened = False
        self._tools = Tools(client=client, target=target, store=store, config=config,
                            clock=clock)
        self._limiter = anyio.CapacityLimiter(config.concurrency)
        self._wakeup = anyio.Event()
        self._stopped = anyio.Event()
        self._stopping = False
        self._listeners: list[Callable[[], None]] = []
        self.stats = ArchiverStats()

    @classmethod
    def attach(cls, config: Config, store: DownloadStore, scheduler: Scheduler,
               client: httpx.AsyncClient) -> Archiver:
        """The daemon's archiver, woken by each batch of polls with events (a new
        ``recording.available`` is one) that the scheduler commits."""
        archiver = cls(store=store, lanes=scheduler.lanes, client=client,
                       target=open_target(config), config=config.archive)
        scheduler.on_commit(archiver.wake)
        return archiver

    def on_commit(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after each archive result is committed (new events to relay)."""
        self._listeners.append(listener)

    def wake(self) -> None:
        """Look for due downloads now (a poll may have made a recording available)."""
        self._wakeup.set()

    def progress(self) -> float:
        """When the claim loop last went round (monotonic): the watchdog's and healthz's input."""
        return self.stats.last_progress

    def downloads(self) -> list[tuple[DownloadJob, DownloadProgress]]:
        """Every download under way and how far it has got, measured now."""
        now = self._clock()
        return [(live.job, live.progress(now)) for live in list(self._tools.live.values())]

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: nothing to do here; ``[archive]`` changes need a restart (the daemon says
        so), and providers' credentials reach us through the scheduler's lanes."""
        del config

    def describe(self) -> str:
        """A fragment for the systemd STATUS= line."""
        if self.stats.paused is not None:
            return f"archive PAUSED ({self.stats.paused})"
        return f"{self.stats.in_flight} downloads in flight"

    def stop(self) -> None:
        """Stop claiming; downloads in flight finish and are settled."""
        self._stopping = True
        self._stopped.set()
        self._wakeup.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self._start()
        task_status.started()
        try:
            async with anyio.create_task_group() as background:
                background.start_soon(self._renew_leases)
                background.start_soon(self._write_progress)
                async with anyio.create_task_group() as attempts:
                    await self._loop(attempts)
                background.cancel_scope.cancel()
        finally:
            with anyio.move_on_after(5, shield=True):
                await self._release()
            await self.target.close()

    async def _release(self) -> None:
        """Hand back jobs cut short (a drain past its grace) so the next start takes them."""
        try:
            released = await self._store.release_downloads()
        except Exception as exc:
            log.warning("store.write_failed", what="download leases", error=str(exc))
            return
        if released:
            log.info("archive.jobs_released", recordings=released)

    # ----------------------------------------------------------------------- the loop

    async def _start(self) -> None:
        try:
            await self._store.recover_downloads()
        except Exception as exc:  # their leases run out by themselves: not worth a stuck start
            log.warning("store.write_failed", what="download lease recovery", error=str(exc))
        try:
            await self._open_target()
        except TargetError as exc:
            await self._pause(exc.reason)
        else:
            await self._set_paused(None)  # a pause left by a previous run is over

    async def _open_target(self) -> None:
        await self.target.open()
        removed = await self.target.cleanup()
        self._opened = True
        if removed:
            log.info("archive.partials_removed", files=removed, target=self.target.url)

    async def _loop(self, attempts: TaskGroup) -> None:
        while not self._stopping:
            self.stats.last_progress = time.monotonic()
            if self.stats.paused is not None:
                with anyio.move_on_after(self._probe_interval):  # wake() does not hurry a probe
                    await self._stopped.wait()
                if not self._stopping:
                    await self._probe()
                continue
            # A fresh event before claiming: a wake() from here on (a slot freed, a poll
            # committed) is not lost while we read the queue.
            event = self._wakeup = anyio.Event()
            free = int(self._limiter.available_tokens)
            jobs = await self._claim(free) if free > 0 else []
            for job in jobs:
                self._limiter.acquire_on_behalf_of_nowait(job.key)
                self.stats.in_flight += 1
                attempts.start_soon(self._work, job)
            if free > 0 and len(jobs) == free:
                continue  # more may be due right now
            await self._idle(event, had_room=free > 0)

    async def _claim(self, free: int) -> list[DownloadJob]:
        return await self._store_retry(lambda: self._store.claim_due_downloads(
            sorted(self._lanes), self._clock(), free))

    async def _idle(self, event: anyio.Event, *, had_room: bool) -> None:
        """Sleep until a job is due, a slot frees up, or a poll commits."""
        wait = self._idle_wait
        if had_room:
            due = await self._store_retry(
                lambda: self._store.next_download_due_at(sorted(self._lanes)))
            if due is not None:
                wait = min(wait, max(0.0, due - self._clock()))
        if wait > 0:
            with anyio.move_on_after(wait):
                await event.wait()

    async def _renew_leases(self) -> None:
        """Keep the leases of long downloads alive (another worker must not take them)."""
        while True:
            await anyio.sleep(self._store.lease_seconds / 3)
            if self.stats.in_flight:
                try:
                    await self._store.extend_download_leases(self._clock())
                except Exception as exc:
                    log.warning("store.write_failed", what="download leases", error=str(exc))

    async def _write_progress(self) -> None:
        """Every ``PROGRESS_EVERY`` s, note how far each download got, for ``status`` (it
        runs in another process and reads the database; the API reads ``downloads()``)."""
        while True:
            await anyio.sleep(self._progress_every)
            if found := self.downloads():
                try:
                    await self._store.record_download_progress(found)
                except Exception as exc:  # shown a little late, never worth failing over
                    log.warning("store.write_failed", what="download progress", error=str(exc))

    # ----------------------------------------------------------------------- one job

    async def _work(self, job: DownloadJob) -> None:
        bound = log.bind(provider=job.provider, call_id=job.call_id, recording_id=job.recording_id)
        started = time.monotonic()
        try:
            lane = self._lanes.get(job.provider)
            if lane is None:  # configured at claim time, gone since (a reload)
                await self._store_retry(lambda: self._store.record_download_failure(
                    job, reason="provider not configured", retry_at=self._clock() + 60,
                    counted=False))
                return
            try:
                outcome = await Attempt(job, lane.provider, self._tools, bound).run()
            except Exception as exc:
                bound.exception("archive.crashed")
                outcome = Retry(reason=f"internal error ({type(exc).__name__})")
            try:
                await self._settle(job, outcome, lane, bound, time.monotonic() - started)
            except PermanentStoreError as exc:
                await self._refused(job, exc, bound)
        finally:
            self.stats.in_flight -= 1
            self._limiter.release_on_behalf_of(job.key)
            self._wakeup.set()

    async def _settle(self, job: DownloadJob, outcome: Outcome, lane: Lane,
                      bound: FilteringBoundLogger, seconds: float) -> None:
        if isinstance(outcome, Pause):
            reason = f"paused: {outcome.reason}"
            await self._pause(outcome.reason)
            await self._store_retry(lambda: self._store.record_download_failure(
                job, reason=reason, retry_at=self._clock(), counted=False))
            return
        if isinstance(outcome, Retry):
            failures = job.attempts + 1
            if failures < self._config.max_attempts:
                await self._retry_later(job, outcome, failures, bound)
                return
            outcome = ArchiveFailed(reason=f"{outcome.reason} (gave up after {failures} "
                                           "attempts)")
        await self._finish(job, outcome, lane, bound, seconds)

    async def _retry_later(self, job: DownloadJob, outcome: Retry, failures: int,
                           bound: FilteringBoundLogger) -> None:
        delay = retry_delay(failures, base=self._retry_base, jitter=self._rng())
        delay = max(delay, outcome.retry_after or 0.0)
        bound.warning("recording.download_failed", reason=outcome.reason, attempt=failures,
                      max_attempts=self._config.max_attempts, retry_in=round(delay, 3))
        await self._store_retry(lambda: self._store.record_download_failure(
            job, reason=outcome.reason, retry_at=self._clock() + delay, counted=True))

    async def _finish(self, job: DownloadJob, outcome: Archived | ArchiveFailed, lane: Lane,
                      bound: FilteringBoundLogger, seconds: float) -> None:
        """Settle the recording (a poll holding the call only delays this a moment)."""
        while True:
            applied = await self._store_retry(lambda: self._store.apply_archive_result(
                job, outcome, self._clock(), lane.policy))
            if applied:
                break
            await anyio.sleep(BUSY_WAIT)
        if isinstance(outcome, Archived):
            self.stats.archived += 1
            self.stats.bytes += outcome.size
            bound.info("recording.archived", path=outcome.path, size=outcome.size,
                       sha256=outcome.sha256, seconds=round(seconds, 3))
        else:
            self.stats.archive_failed += 1
            bound.error("recording.archive_failed", reason=outcome.reason)
        for listener in self._listeners:
            listener()

    # ----------------------------------------------------------------------- pause

    async def _refused(self, job: DownloadJob, error: PermanentStoreError,
                       bound: FilteringBoundLogger) -> None:
        """The database refuses this job's result for good: count a failed attempt (so its
        attempts run out) instead of holding the job, or the archiver, forever."""
        bound.error("archive.result_refused", error=str(error))
        try:
            await self._store_retry(lambda: self._store.record_download_failure(
                job, reason=f"result cannot be stored: {error}"[:300],
                retry_at=self._clock() + 300, counted=True))
        except PermanentStoreError as exc:
            bound.error("store.write_refused", what="download failure", error=str(exc))

    async def _pause(self, reason: str) -> None:
        if self.stats.paused is not None:
            return
        self.stats.paused = reason
        log.error("archive.paused", reason=reason, target=self.target.url,
                  hint="archiving resumes by itself once objects can be stored there again")
        await self._set_paused(reason)

    async def _probe(self) -> None:
        """Try the target; resume archiving when a probe object can be stored."""
        try:
            if not self._opened:
                await self._open_target()
            await self.target.probe()
        except TargetError as exc:
            log.debug("archive.probe_failed", reason=exc.reason)
            return
        log.info("archive.resumed", was=self.stats.paused)
        self.stats.paused = None
        await self._set_paused(None)

    async def _set_paused(self, reason: str | None) -> None:
        try:
            await self._store.set_archive_paused(reason, self._clock())
        except Exception as exc:  # the database may sit on the same full disk
            log.warning("store.write_failed", what="archive state", error=str(exc))

    async def _store_retry(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run a store operation, retrying while the database refuses (locked, disk full)."""
        return await until_written(operation, log, what="archive queue")
