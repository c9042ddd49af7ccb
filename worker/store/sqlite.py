"""The SQLite backend of the store contract (``store/base.py``): calls, outbox, life cycle.

Composition, not inheritance: ``SQLiteStore`` holds one ``SQLiteDatabase`` (the connector,
``sqlite_db.py``) and hands it to its delivery and download parts (``deliveries.py``,
``downloads.py``), each of which uses only the connector's public API. The methods of those
parts are forwarded below, so the store is one object with the whole ``Store`` contract.

Open it only through ``worker.store.open_store``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import structlog

from worker.archive.base import ArchiveState, DownloadInfo, DownloadJob, DownloadProgress
from worker.model import DownloadSource, TrackedCall
from worker.reconcile import Archived, ArchiveFailed, Policy
from worker.store import jobs, rows
from worker.store.base import (
    DISCOVERY_LEASE,
    AttemptView,
    CallCursor,
    CallPage,
    Counts,
    DiscoveryState,
    Heartbeat,
    NewCall,
    PollApplied,
    PrunedCall,
    StoredEvent,
    StoreHealth,
    TableStats,
)
from worker.store.deliveries import SQLiteDeliveries
from worker.store.discovery import SQLiteDiscovery
from worker.store.downloads import SQLiteDownloads
from worker.store.errors import PermanentStoreError, StoreError
from worker.store.operator import STATE, SQLiteOperator
from worker.store.planning import dead_owners, owner_is_dead, worker_identity
from worker.store.retention import SQLiteRetention
from worker.store.sqlite_db import BUSY_TIMEOUT_MS, SCHEMA_VERSION, SQLiteDatabase, migrations
from worker.webhooks.base import (
    AttemptResult,
    Claim,
    DeliveryCounts,
    DeliveryView,
    ListFilter,
    Replayed,
    Router,
)

__all__ = ["BUSY_TIMEOUT_MS", "LEASE_SECONDS", "SCHEMA_VERSION", "SQLiteStore", "StoreError",
           "migrations", "owner_is_dead"]
_owner_is_dead = owner_is_dead  # the name older tests use

log = structlog.get_logger("worker.store")

LEASE_SECONDS = 30.0  # the default of [worker] lease_seconds


class SQLiteStore:
    """The ``Store`` contract over one SQLite file."""

    def __init__(self, db: SQLiteDatabase, owner: str, lease_seconds: float) -> None:
        self.db = db
        self.path = db.path
        self._owner = owner
        self._lease_seconds = lease_seconds
        self._reader: aiosqlite.Connection | None = None  # see _read_connection
        self._reader_lock = anyio.Lock()
        self.deliveries = SQLiteDeliveries(db, owner)
        self.downloads = SQLiteDownloads(db, owner, lease_seconds)
        self.discovery = SQLiteDiscovery(db, owner)
        self.operator = SQLiteOperator(db)
        self.retention = SQLiteRetention(db)

    @classmethod
    async def open(cls, path: Path, owner: str | None = None, *,
                   lease_seconds: float = LEASE_SECONDS) -> SQLiteStore:
        """Open (creating if needed), check and migrate the database at ``path``."""
        db = await SQLiteDatabase.open(path)
        return cls(db, owner or worker_identity(), lease_seconds)

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def lease_seconds(self) -> float:
        return self._lease_seconds

    @property
    def location(self) -> str:
        return str(self.path)

    async def schema_version(self) -> int:
        row = await self.db.fetchone("PRAGMA user_version")
        return int(row[0]) if row else 0

    # ----------------------------------------------------------------------- calls

    _TRACK = ("INSERT INTO calls (provider, call_id, metadata, webhook_url, tracked_at, "
              "updated_at, next_poll_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
              "ON CONFLICT (provider, call_id) DO NOTHING")

    async def track(self, call: NewCall, now: float) -> bool:
        async with self.db.transaction() as db:
            cursor = await db.execute(self._TRACK, _track_params(call, now))
            return cursor.rowcount == 1

    async def track_many(self, calls: Sequence[tuple[NewCall, float]]) -> int:
        """Track many ``(call, now)`` in one transaction; return how many were new.

        A bulk import: one transaction instead of one per call (about 50 times faster), which
        is how the scale benchmark loads 100 000 calls. Each call's first poll is due at its
        own ``now``, so an import can spread its calls over time.
        """
        if not calls:
            return 0
        async with self.db.transaction() as db:
            cursor = await db.executemany(self._TRACK,
                                          [_track_params(call, now) for call, now in calls])
            return cursor.rowcount

    async def extend_call_leases(self, now: float) -> int:
        async with self.db.transaction() as db:
            cursor = await db.execute(
                "UPDATE calls SET lease_until = ? "
                "WHERE lease_owner = ? AND lease_until IS NOT NULL",
                (now + self._lease_seconds, self.owner))
            return cursor.rowcount

    async def set_aside(self, provider: str, call_id: str, reason: str, now: float) -> bool:
        async with self.db.transaction() as db:
            cursor = await db.execute(
                "UPDATE calls SET set_aside_reason = ?, set_aside_at = ?, next_poll_at = NULL, "
                "lease_owner = NULL, lease_until = NULL WHERE provider = ? AND call_id = ?",
                (reason[:500], now, provider, call_id))
            return cursor.rowcount == 1

    async def wait_for_change(self, timeout: float) -> bool:  # noqa: ASYNC109 - a wake-up
        """SQLite has no notifications: the scheduler's idle tick finds other processes'
        changes (within about a second)."""
        await anyio.sleep(timeout)
        return False

    async def claim_due_calls(self, provider: str, now: float, limit: int) -> list[TrackedCall]:
        if limit <= 0:
            return []
        # One job on the database thread, one aggregated row however many calls are due
        # (see store/jobs.py): RETURNING the leased rows cost one GIL retake per row, which
        # made claims the pipeline's bottleneck under load.
        claimed, recordings = await self.db.job(
            jobs.claim_due, provider, now=now, owner=self.owner, until=now + self._lease_seconds,
            limit=limit)
        unreadable: list[tuple[str, str, str]] = []
        calls = rows.calls_from_values(claimed, recordings, unreadable)
        for bad_provider, call_id, why in unreadable:
            log.error("store.call_set_aside", provider=bad_provider, call_id=call_id, error=why,
                      hint="the call cannot be read back; it is no longer polled")
            await self.set_aside(bad_provider, call_id, f"cannot read the call: {why}", now)
        return calls

    async def apply_poll_results(self, items: Sequence[PollApplied], now: float) -> None:
        if not items:
            return
        # Every parameter (event ids and bodies included) is built before the write lock is
        # taken: the transaction then holds the database only for the statements themselves.
        try:
            writes = rows.poll_writes(items, now)
            updates = rows.call_updates(writes.calls)
        except (ValueError, TypeError, RecursionError, OverflowError) as exc:
            # Data that cannot be encoded (metadata nested too deep, a value JSON cannot
            # hold): the same every time, so permanent; ``retry.write_isolating`` finds the
            # call it belongs to.
            raise PermanentStoreError(f"cannot encode poll results: {exc!r}"[:300]) from exc
        if len(updates) == 1 and not writes.events and not writes.recordings:
            # One UPDATE is atomic on its own: a batch that changed nothing but call rows, as
            # most do, needs no BEGIN/COMMIT.
            await self.db.write_job(jobs.write_decisions, writes, updates)
        else:
            await self.db.write_job(jobs.transaction, jobs.write_decisions, writes, updates)

    async def next_due_at(self, provider: str) -> float | None:
        row = await self.db.fetchone(rows.NEXT_DUE, (provider,))
        return row[0] if row and row[0] is not None else None

    async def make_due(self, provider: str, call_id: str, now: float) -> bool:
        # MIN: a call already overdue keeps its place in the queue.
        async with self.db.transaction() as db:
            cursor = await db.execute(
                "UPDATE calls SET next_poll_at = MIN(next_poll_at, ?) WHERE provider = ? "
                "AND call_id = ? AND next_poll_at IS NOT NULL AND terminal IS NULL",
                (now, provider, call_id))
            return cursor.rowcount == 1

    async def get_call(self, provider: str, call_id: str) -> TrackedCall | None:
        found = await self.db.job(jobs.calls_with_recordings,
                                  "WHERE provider = ? AND call_id = ?", (provider, call_id))
        return found[0] if found else None

    async def list_calls(self, *, limit: int, include_terminal: bool) -> list[TrackedCall]:
        where = "" if include_terminal else "WHERE terminal IS NULL"
        return await self.db.job(jobs.calls_with_recordings,
                                 f"{where} ORDER BY tracked_at DESC, pk DESC LIMIT ?", (limit,))

    # ----------------------------------------------------------------------- outbox

    _EVENT_SELECT = ("SELECT e.seq, e.id, c.provider, c.call_id, e.type, e.occurred_at, e.body "
                     "FROM events e JOIN calls c ON c.pk = e.call_pk ")

    async def call_events(self, provider: str, call_id: str) -> list[StoredEvent]:
        found = await self.db.fetchall(
            self._EVENT_SELECT + "WHERE c.provider = ? AND c.call_id = ? ORDER BY e.seq",
            (provider, call_id))
        return [_event(r) for r in found]

    async def events_after(self, seq: int, limit: int) -> list[StoredEvent]:
        found = await self.db.fetchall(
            self._EVENT_SELECT + "WHERE e.seq > ? ORDER BY e.seq LIMIT ?", (seq, limit))
        return [_event(r) for r in found]

    async def counts(self) -> Counts:
        """Totals from the maintained ``call_counts`` table (migration 0008), on a
        connection of their own (``_read_connection``).

        Grouping every call by state took 0.2 s at 100 000 calls and grew with them; the
        table is kept by triggers in the transaction of every change, so reading it costs
        the same at a million calls as at ten. The oldest due poll is one index probe per
        provider (``calls_due`` leads with the provider).
        """
        async with self._reader_lock:
            db = await self._read_connection()
            by_state = {(r[0], r[1]): r[2] for r in await db.execute_fetchall(_COUNTS)}
            # Events ever written: the last seq (AUTOINCREMENT never reuses one, even after
            # retention pruned old ones), so no scan of the outbox; table_stats counts rows.
            [(events,)] = await db.execute_fetchall(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)")
            [(due,)] = await db.execute_fetchall(_OLDEST_DUE)
        return Counts(calls_by_state=by_state, events=events, oldest_due_at=due)

    async def recount_calls(self) -> int:
        """Check ``call_counts`` against a full count and repair it; return the groups fixed.

        The triggers keep the table exact, so this normally finds nothing; the daemon runs it
        once in the background after start, so that drift from a bug, or from a hand edit of
        the file with the triggers missing, lasts at most until the next start. Both counts
        are read in one read transaction beside the writer (one snapshot: a poll committed
        meanwhile cannot pass for drift), and a repair adds the difference found in that
        snapshot, which stays exact whatever the triggers counted since: the write lock is
        held for a few rows, never for a full count (seconds at a million calls).
        """
        async with self._reader_lock:
            db = await self._read_connection()
            await db.execute("BEGIN")
            try:
                actual = {(r[0], r[1]): r[2] for r in await db.execute_fetchall(_RECOUNT)}
                kept = {(r[0], r[1]): r[2] for r in await db.execute_fetchall(_COUNTS)}
            finally:
                await db.execute("COMMIT")
        wrong = {key: actual.get(key, 0) - kept.get(key, 0)
                 for key in actual.keys() | kept.keys() if actual.get(key) != kept.get(key)}
        if not wrong:
            return 0
        async with self.db.transaction() as tx:
            await tx.executemany(
                "INSERT INTO call_counts (provider, state, n) VALUES (?, ?, ?) "
                "ON CONFLICT (provider, state) DO UPDATE SET n = n + excluded.n",
                [(provider, state, delta) for (provider, state), delta in wrong.items()])
        log.warning("store.counts_repaired", groups=len(wrong),
                    sample=sorted(f"{p}/{s}: {kept.get((p, s), 0)} -> {actual.get((p, s), 0)}"
                                  for p, s in wrong)[:5])
        return len(wrong)

    async def _read_connection(self) -> aiosqlite.Connection:
        """A second connection, opened on first use, for long reads: in WAL mode it reads
        beside the writer, on its own thread, with a small page cache (2 MB)."""
        if self._reader is None:
            reader = await aiosqlite.connect(self.path, isolation_level=None)
            await reader.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            await reader.execute("PRAGMA query_only=ON")
            self._reader = reader
        return self._reader

    # ----------------------------------------------------------------------- life cycle

    async def recover(self) -> int:
        owners = await self.db.fetchall("SELECT DISTINCT lease_owner FROM calls "
                                        "WHERE lease_owner IS NOT NULL")
        dead = dead_owners([r[0] for r in owners], self.owner)
        released = 0
        if dead:
            async with self.db.transaction() as db:
                for owner in dead:
                    cursor = await db.execute("UPDATE calls SET lease_owner = NULL, "
                                              "lease_until = NULL WHERE lease_owner = ?", (owner,))
                    released += cursor.rowcount
        if released:
            log.info("store.leases_recovered", calls=released, owners=len(dead))
        return released

    async def release_leases(self) -> int:
        """At a clean stop: hand back what we claimed but did not finish, for the next start."""
        async with self.db.transaction() as db:
            cursor = await db.execute("UPDATE calls SET lease_owner = NULL, lease_until = NULL "
                                      "WHERE lease_owner = ?", (self.owner,))
            return cursor.rowcount

    async def integrity_check(self) -> str:
        row = await self.db.fetchone("PRAGMA integrity_check")
        return str(row[0]) if row else "no answer"

    async def probe(self) -> StoreHealth:
        return await self.db.probe()

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            if self._reader is not None:
                reader, self._reader = self._reader, None
                try:
                    await reader.close()
                except (sqlite3.Error, ValueError) as exc:
                    log.warning("store.close_failed", error=str(exc))
            await self.db.close()

    # ------------------------------------------------- deliveries (``deliveries.py``)

    async def fan_out(self, route: Router, now: float, limit: int = 500) -> int:
        return await self.deliveries.fan_out(route, now, limit)

    async def claim_due_deliveries(self, now: float, *, free: Mapping[str, int],
                                   default_free: int, limit: int,
                                   lease_seconds: float) -> Claim:
        return await self.deliveries.claim_due_deliveries(
            now, free=free, default_free=default_free, limit=limit, lease_seconds=lease_seconds)

    async def record_attempts(self, results: Sequence[AttemptResult], now: float) -> None:
        await self.deliveries.record_attempts(results, now)

    async def recover_deliveries(self, now: float) -> int:
        return await self.deliveries.recover_deliveries(now)

    async def release_deliveries(self, now: float) -> int:
        return await self.deliveries.release_deliveries(now)

    async def replay(self, now: float, *, event_id: str | None = None, dead: bool = False,
                     since: float | None = None, endpoint: str | None = None) -> Replayed:
        return await self.deliveries.replay(now, event_id=event_id, dead=dead, since=since,
                                            endpoint=endpoint)

    async def list_deliveries(self, *, only: ListFilter | None = None,
                              endpoint: str | None = None,
                              call: tuple[str, str] | None = None,
                              limit: int = 50) -> list[DeliveryView]:
        return await self.deliveries.list_deliveries(only=only, endpoint=endpoint, call=call,
                                                     limit=limit)

    async def delivery_counts(self) -> DeliveryCounts:
        return await self.deliveries.delivery_counts()

    # --------------------------------------------------- downloads (``downloads.py``)

    async def claim_due_downloads(self, providers: list[str], now: float,
                                  limit: int) -> list[DownloadJob]:
        return await self.downloads.claim_due_downloads(providers, now, limit)

    async def next_download_due_at(self, providers: list[str]) -> float | None:
        return await self.downloads.next_download_due_at(providers)

    async def record_download_failure(self, job: DownloadJob, *, reason: str, retry_at: float,
                                      counted: bool) -> None:
        await self.downloads.record_download_failure(job, reason=reason, retry_at=retry_at,
                                                     counted=counted)

    async def update_recording_link(self, job: DownloadJob, source: DownloadSource) -> None:
        await self.downloads.update_recording_link(job, source)

    async def apply_archive_result(self, job: DownloadJob, outcome: Archived | ArchiveFailed,
                                   now: float, policy: Policy) -> bool:
        return await self.downloads.apply_archive_result(job, outcome, now, policy)

    async def extend_download_leases(self, now: float) -> int:
        return await self.downloads.extend_download_leases(now)

    async def release_downloads(self) -> int:
        return await self.downloads.release_downloads()

    async def recover_downloads(self) -> int:
        return await self.downloads.recover_downloads()

    async def set_archive_paused(self, reason: str | None, now: float) -> None:
        await self.downloads.set_archive_paused(reason, now)

    async def archive_state(self) -> ArchiveState:
        return await self.downloads.archive_state()

    async def download_info(self, provider: str, call_id: str) -> dict[str, DownloadInfo]:
        return await self.downloads.download_info(provider, call_id)

    # --------------------------------------------------- operator (``operator.py``)

    async def untrack(self, provider: str, call_id: str, now: float) -> bool:
        return await self.operator.untrack(provider, call_id, now)

    async def list_calls_page(self, *, limit: int, provider: str | None = None,
                              state: str | None = None,
                              after: CallCursor | None = None) -> CallPage:
        return await self.operator.list_calls_page(limit=limit, provider=provider,
                                                   state=state, after=after)

    async def event_attempts(self, event_id: str) -> list[AttemptView] | None:
        return await self.operator.event_attempts(event_id)

    async def beat(self, heartbeat: Heartbeat) -> None:
        await self.operator.beat(heartbeat)

    async def remove_heartbeat(self, owner: str) -> None:
        await self.operator.remove_heartbeat(owner)

    async def heartbeats(self) -> list[Heartbeat]:
        return await self.operator.heartbeats()

    async def record_download_progress(
            self, items: Sequence[tuple[DownloadJob, DownloadProgress]]) -> None:
        await self.downloads.record_download_progress(items)


    # --------------------------------------------------- discovery (``discovery.py``)

    async def claim_discovery(self, provider: str, now: float,
                              lease: float = DISCOVERY_LEASE) -> DiscoveryState | None:
        return await self.discovery.claim_discovery(provider, now, lease)

    async def advance_discovery(self, provider: str, mark: float | None, now: float,
                                lease: float = DISCOVERY_LEASE) -> bool:
        return await self.discovery.advance_discovery(provider, mark, now, lease)

    async def release_discovery(self, provider: str) -> None:
        await self.discovery.release_discovery(provider)

    async def discovery_state(self, provider: str) -> DiscoveryState | None:
        return await self.discovery.discovery_state(provider)

    # ------------------------------------------------- retention (``retention.py``)

    async def prune_settled(self, before: float, *, limit: int, dry_run: bool = False,
                            after: int = 0) -> list[PrunedCall]:
        return await self.retention.prune_settled(before, limit=limit, dry_run=dry_run,
                                                  after=after)

    async def reclaim_space(self) -> int:
        return await self.retention.reclaim_space()

    async def vacuum(self) -> None:
        await self.retention.vacuum()

    async def table_stats(self) -> TableStats:
        async with self._reader_lock:
            return await self.retention.table_stats(await self._read_connection())



_STATE = STATE  # a call's state for ``counts`` (``operator.py``; 0008's triggers agree)
_COUNTS = "SELECT provider, state, n FROM call_counts WHERE n <> 0"
_RECOUNT = f"SELECT provider, {_STATE}, COUNT(*) FROM calls GROUP BY 1, 2"
# MIN of per-provider MINs: each inner MIN is one probe of the calls_due index.
_OLDEST_DUE = ("SELECT MIN((SELECT MIN(next_poll_at) FROM calls "
               "WHERE provider = p.provider AND next_poll_at IS NOT NULL)) "
               "FROM (SELECT DISTINCT provider FROM call_counts) AS p")


def _track_params(call: NewCall, now: float) -> tuple[Any, ...]:
    if not call.metadata:  # discovered calls: no copy and no encoder for each one
        return (call.provider, call.call_id, "{}", call.webhook_url, now, now, now)
    try:
        metadata = json.dumps(dict(call.metadata))
    except (ValueError, TypeError, RecursionError) as exc:
        raise PermanentStoreError(f"cannot store the metadata of {call.provider} "
                                  f"{call.call_id}: {exc!r}"[:300]) from exc
    return (call.provider, call.call_id, metadata, call.webhook_url, now, now, now)


def _event(row: sqlite3.Row) -> StoredEvent:
    return StoredEvent(seq=row[0], id=row[1], provider=row[2], call_id=row[3], type=row[4],
                       occurred_at=row[5], body=bytes(row[6]))
