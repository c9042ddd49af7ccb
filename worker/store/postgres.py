"""The PostgreSQL implementation of the store: several workers on one database.

What makes sharing safe (CONTRACT.md, "Database: SQLite or PostgreSQL"):

- **Claims** take rows with ``FOR UPDATE SKIP LOCKED`` and write a lease (owner, until) in
  the same statement: two workers never hold one call, delivery or download at once.
- **Leases live as long as their work is held.** The store remembers what it handed out and
  has not had back: calls claimed and not yet written back or set aside, downloads not yet
  settled or rescheduled, deliveries not yet recorded (for no longer than the lease the relay
  asked for). A heartbeat renews those rows, and only those, each ``lease_seconds / 3``. So a
  slow download keeps its lease; a worker that dies (SIGKILL, a machine that vanishes) stops
  renewing and its rows are free again ``lease_seconds`` later; and a row still leased to a
  live worker that no longer holds it (a claim whose reply was lost, work a component gave up
  on) runs out the same way and is claimed again, by any worker, this one included.
- **The outbox stays in commit order.** Events are inserted under a transaction-level
  advisory lock (``postgres_sql.EVENTS_LOCK``), so seq order is commit order.
- **LISTEN/NOTIFY**: ``track`` and ``make_due`` notify, as do new events; ``wait_for_change``
  returns when any process's change arrives, so a call tracked anywhere is polled within
  about a second.
- **Migrations** run under an advisory lock: three workers starting at once is safe.

Driver: asyncpg (see docs/benchmarks.md). Its errors are translated into ``StoreError`` at
this boundary, with the password never in the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import asyncpg
import structlog

from worker.archive.base import ArchiveState, DownloadInfo, DownloadJob, DownloadProgress
from worker.database_url import PostgresUrl, parse_postgres_url
from worker.model import DownloadSource, RecordingState, TrackedCall
from worker.reconcile import Archived, ArchiveFailed, Policy
from worker.store import postgres_sql as sql
from worker.store import rows
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
    Store,
    StoredEvent,
    StoreHealth,
    TableStats,
)
from worker.store.errors import PermanentStoreError, StoreError
from worker.store.operator import STATE
from worker.store.planning import dead_owners, worker_identity
from worker.store.postgres_db import CONNECT_TIMEOUT, Connections, notify, write_decisions
from worker.store.postgres_deliveries import PostgresDeliveries
from worker.store.postgres_discovery import PostgresDiscovery
from worker.store.postgres_downloads import PostgresDownloads
from worker.store.postgres_operator import PostgresOperator
from worker.store.postgres_retention import PRUNED_CURSOR, PostgresRetention
from worker.webhooks.base import (
    AttemptResult,
    Claim,
    DeliveryCounts,
    DeliveryView,
    ListFilter,
    Replayed,
    Router,
)

log = structlog.get_logger("worker.store")

POOL_SIZE = 8
UNREADABLE_METADATA = {"callwatch": "metadata too deeply nested to read back"}


async def open_backend(url: str, *, owner: str, lease_seconds: float,
                       password: str | None = None, migrate: bool = True) -> PostgresStore:
    """The factory's entry (``store/factory.py``): open the store at ``url``."""
    try:
        where = parse_postgres_url(url, password)
    except ValueError as exc:
        raise PermanentStoreError(f"[worker] database: {exc}") from exc
    return await PostgresStore.open(where, owner=owner, lease_seconds=lease_seconds,
                                    migrate=migrate)


class PostgresStore:
    """The ``Store`` contract over one PostgreSQL database, shared by any number of workers."""

    def __init__(self, db: Connections, owner: str, lease_seconds: float) -> None:
        self.db = db
        self._owner = owner
        self._lease_seconds = lease_seconds
        self._heartbeat: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._changed = anyio.Event()
        # Calls claimed and not yet written back or set aside: (provider, call_id) -> pk.
        self._held_calls: dict[tuple[str, str], int] = {}
        self.deliveries = PostgresDeliveries(db, owner, lease_seconds, self.start_heartbeat)
        self.downloads = PostgresDownloads(db, owner, lease_seconds, self.start_heartbeat)
        self.discovery = PostgresDiscovery(db, owner)
        self.operator = PostgresOperator(db, self._calls)
        self.retention = PostgresRetention(db)

    @classmethod
    async def open(cls, where: PostgresUrl, *, lease_seconds: float = 30.0,
                   owner: str | None = None, pool_size: int = POOL_SIZE,
                   migrate: bool = True) -> PostgresStore:
        """Connect and bring the schema up to date; one clear StoreError when it cannot."""
        db = await Connections.connect(where, pool_size)
        try:
            if migrate:
                await db.migrate()
            else:
                db.refuse_newer(await db.schema_version())
        except BaseException:
            await db.close()
            raise
        return cls(db, owner or worker_identity(), lease_seconds)

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def lease_seconds(self) -> float:
        return self._lease_seconds

    @property
    def location(self) -> str:
        return str(self.db.where)  # the URL without its password

    async def migrate(self) -> int:
        return await self.db.migrate()

    async def schema_version(self) -> int:
        return await self.db.schema_version()

    # ----------------------------------------------------------------------- calls

    async def track(self, call: NewCall, now: float) -> bool:
        params = _track_params(call, now)
        async with self.db.transaction() as conn:
            pk = await conn.fetchval(sql.TRACK, *params)
            if pk is not None:
                await notify(conn, f"calls:{call.provider}")
            return pk is not None

    async def track_many(self, calls: Sequence[tuple[NewCall, float]]) -> int:
        """Track many ``(call, now)`` in one statement; return how many were new.

        One round trip whatever the number of calls; providers that got a new call are
        notified, as ``track`` does.
        """
        if not calls:
            return 0
        columns = [list(column) for column in
                   zip(*(_track_params(c, now) for c, now in calls), strict=True)]
        async with self.db.transaction() as conn:
            added = await conn.fetch(sql.TRACK_MANY, *columns)
            for provider, _ in added:
                await notify(conn, f"calls:{provider}")
        return sum(int(n) for _, n in added)

    async def extend_call_leases(self, now: float) -> int:
        if not self._held_calls:
            return 0
        async with self.db.connection() as conn:
            status = await conn.execute(sql.RENEW_CALLS, self.owner, now + self.lease_seconds,
                                        sorted(self._held_calls.values()))
        return _count(status)

    async def set_aside(self, provider: str, call_id: str, reason: str, now: float) -> bool:
        # Given up on: no longer renewed, even if this write fails for good (the scheduler
        # then drops the call, and its lease must run out for it to be polled again).
        self._held_calls.pop((provider, call_id), None)
        async with self.db.connection() as conn:
            status = await conn.execute(
                "UPDATE calls SET set_aside_reason = $1, set_aside_at = $2, next_poll_at = NULL, "
                "lease_owner = NULL, lease_until = NULL WHERE provider = $3 AND call_id = $4",
                reason[:500], now, provider, call_id)
        return _count(status) == 1

    async def claim_due_calls(self, provider: str, now: float, limit: int) -> list[TrackedCall]:
        if limit <= 0:
            return []
        self.start_heartbeat()
        async with self.db.transaction() as conn:  # all or nothing: see Connections.transaction
            claimed = await conn.fetch(sql.CLAIM_CALLS, provider, now, limit, self.owner,
                                       now + self.lease_seconds)
            with_recordings = [r[0] for r in claimed if r[-1]]
            recordings = (await conn.fetch(sql.RECORDINGS_OF, with_recordings)
                          if with_recordings else [])
        by_call = rows.recordings_by_call(recordings)
        calls, unreadable = [], []
        for row in claimed:
            try:
                calls.append(rows.call_from_row(row, by_call.get(row[0], ())))
            except (ValueError, TypeError, RecursionError) as exc:
                unreadable.append((row[1], row[2], repr(exc)[:200]))
        for provider_name, call_id, why in unreadable:  # one bad row never fails the claim
            log.error("store.call_set_aside", provider=provider_name, call_id=call_id,
                      error=why, hint="the call cannot be read back; it is no longer polled")
            await self.set_aside(provider_name, call_id, f"cannot read the call: {why}", now)
        calls.sort(key=lambda c: c.next_poll_at)
        self._held_calls.update(((c.provider, c.call_id), c.pk) for c in calls
                                if c.pk is not None)  # committed: ours now
        return calls

    async def apply_poll_results(self, items: Sequence[PollApplied], now: float) -> None:
        if not items:
            return
        try:
            writes = rows.poll_writes(items, now)
        except (ValueError, TypeError, RecursionError, OverflowError) as exc:
            raise PermanentStoreError(f"cannot encode poll results: {exc!r}"[:300]) from exc
        locks = (sql.EVENTS_LOCK,) if writes.events else ()
        async with self.db.transaction(*locks) as conn:
            await write_decisions(conn, writes, self.owner)
        for item in items:  # written back, or another worker's since our lease ran out
            self._held_calls.pop((item.decision.call.provider, item.decision.call.call_id), None)

    async def next_due_at(self, provider: str) -> float | None:
        async with self.db.connection() as conn:
            due = await conn.fetchval(sql.NEXT_DUE, provider, self.owner)
        return float(due) if due is not None else None

    async def make_due(self, provider: str, call_id: str, now: float) -> bool:
        async with self.db.transaction() as conn:
            changed = _count(await conn.execute(sql.MAKE_DUE, now, provider, call_id)) == 1
            if changed:
                await notify(conn, f"calls:{provider}")
        return changed

    async def get_call(self, provider: str, call_id: str) -> TrackedCall | None:
        found = await self._calls("WHERE provider = $1 AND call_id = $2", provider, call_id)
        return found[0] if found else None

    async def list_calls(self, *, limit: int, include_terminal: bool) -> list[TrackedCall]:
        where = "" if include_terminal else "WHERE terminal IS NULL"
        return await self._calls(f"{where} ORDER BY tracked_at DESC, pk DESC LIMIT $1", limit)

    async def _calls(self, tail: str, *params: Any) -> list[TrackedCall]:
        async with self.db.connection() as conn:
            found = await conn.fetch(f"SELECT {rows.CALL_COLUMNS} FROM calls {tail}", *params)
            recordings = await conn.fetch(sql.RECORDINGS_OF, [r[0] for r in found])
        by_call = rows.recordings_by_call(recordings)
        return [_readable(r, by_call.get(r[0], ())) for r in found]

    # ----------------------------------------------------------------------- outbox

    async def call_events(self, provider: str, call_id: str) -> list[StoredEvent]:
        async with self.db.connection() as conn:
            found = await conn.fetch(sql.EVENT_SELECT + "WHERE c.provider = $1 AND "
                                     "c.call_id = $2 ORDER BY e.seq", provider, call_id)
        return [_event(r) for r in found]

    async def events_after(self, seq: int, limit: int) -> list[StoredEvent]:
        async with self.db.connection() as conn:
            found = await conn.fetch(sql.EVENT_SELECT + "WHERE e.seq > $1 ORDER BY e.seq "
                                     "LIMIT $2", seq, limit)
        return [_event(r) for r in found]

    async def counts(self) -> Counts:
        """Totals from ``call_counts``, kept by triggers (migrations 0008 and 0009): a handful
        of rows however many calls; the oldest due poll is one ``calls_due`` probe per
        provider."""
        async with self.db.connection() as conn:
            by_state = {(r[0], r[1]): int(r[2]) for r in await conn.fetch(sql.COUNTS)}
            # Events ever written: the last seq, or the largest one retention pruned (a
            # sequence's own value would count skipped ones: ON CONFLICT DO NOTHING).
            events = await conn.fetchval(
                "SELECT GREATEST(COALESCE((SELECT MAX(seq) FROM events), 0), "
                "COALESCE((SELECT seq FROM outbox_cursors WHERE name = $1), 0))", PRUNED_CURSOR)
            due = await conn.fetchval(sql.OLDEST_DUE)
        return Counts(calls_by_state=by_state, events=int(events), oldest_due_at=due)

    async def recount_calls(self) -> int:
        """As ``SQLiteStore.recount_calls``: both counts in one snapshot (a read-only
        REPEATABLE READ transaction), a repair adds the difference found in it."""
        async with self.db.connection() as conn, conn.transaction(isolation="repeatable_read",
                                                                  readonly=True):
            actual = {(r[0], r[1]): int(r[2]) for r in await conn.fetch(
                f"SELECT provider, {_STATE}, COUNT(*) FROM calls GROUP BY 1, 2")}
            kept = {(r[0], r[1]): int(r[2]) for r in await conn.fetch(sql.COUNTS)}
        wrong = {key: actual.get(key, 0) - kept.get(key, 0)
                 for key in actual.keys() | kept.keys() if actual.get(key) != kept.get(key)}
        if not wrong:
            return 0
        async with self.db.transaction() as conn:
            await conn.executemany(sql.ADD_COUNT,
                                   [(p, s, d) for (p, s), d in sorted(wrong.items())])
        log.warning("store.counts_repaired", groups=len(wrong),
                    sample=sorted(f"{p}/{s}: {kept.get((p, s), 0)} -> {actual.get((p, s), 0)}"
                                  for p, s in wrong)[:5])
        return len(wrong)

    # ----------------------------------------------------------------------- changes

    async def wait_for_change(self, timeout: float) -> bool:  # noqa: ASYNC109 - a wake-up
        """Wait until any process tracks a call, makes one due, releases leases or writes
        events (True), or ``timeout`` passes (False). Listens from the first call on."""
        await self._listen()
        changed = self._changed
        with anyio.move_on_after(timeout):
            await changed.wait()
            return True
        return False

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        try:
            with self.db.translated():
                listener = await asyncpg.connect(self.db.where.dsn(), timeout=CONNECT_TIMEOUT)
                await listener.add_listener(sql.CHANNEL, self._on_notify)
                self._listener = listener
        except StoreError as exc:
            log.warning("store.listen_failed", error=str(exc))

    def _on_notify(self, _conn: object, _pid: int, _channel: str, _payload: str) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    # ----------------------------------------------------------------------- leases

    def start_heartbeat(self) -> None:
        """Renew this worker's leases while it lives (started by its first claim).

        An asyncio task rather than a task-group child: the store outlives the daemon's
        task group by design (opened before it, closed after), and ``close`` ends it. The
        daemon runs on asyncio (uvicorn, aiosqlite, asyncpg all need it).
        """
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        while True:
            await anyio.sleep(self.lease_seconds / 3)
            try:
                await self.renew_leases(time.time())
            except StoreError as exc:
                log.warning("store.lease_renewal_failed", error=str(exc))

    async def renew_leases(self, now: float) -> None:
        """Push the lease of every call, delivery and download this worker holds (claimed,
        not yet finished, handed back or given up) to ``now + lease_seconds``.

        Only those: a row leased to us that nothing here holds any more (a claim whose reply
        was lost, work a component dropped) must run out and be claimed again. Renewing all
        of ``lease_owner = us`` kept such rows from every worker until this one stopped.
        """
        calls = sorted(self._held_calls.values())
        deliveries = self.deliveries.held(now)
        call_pks, recording_ids = self.downloads.held()
        if not (calls or deliveries or call_pks):
            return  # an idle worker renews nothing: no round trip
        until = now + self.lease_seconds
        async with self.db.transaction() as conn:
            if calls:
                await conn.execute(sql.RENEW_CALLS, self.owner, until, calls)
            if deliveries:
                await conn.execute(sql.RENEW_DELIVERIES, self.owner, until, deliveries)
            if call_pks:
                await conn.execute(sql.RENEW_DOWNLOADS, self.owner, until, call_pks,
                                   recording_ids)

    async def recover(self) -> int:
        """Release call leases of workers on this host whose process is gone (a restart
        after a crash takes its work back at once); other hosts' run out by themselves."""
        async with self.db.connection() as conn:
            owners = [r[0] for r in await conn.fetch(
                "SELECT DISTINCT lease_owner FROM calls WHERE lease_owner IS NOT NULL")]
        dead = dead_owners(owners, self.owner)
        if not dead:
            return 0
        async with self.db.transaction() as conn:
            released = _count(await conn.execute(
                "UPDATE calls SET lease_owner = NULL, lease_until = NULL "
                "WHERE lease_owner = ANY($1)", dead))
            await notify(conn, "calls:*")
        log.info("store.leases_recovered", calls=released, owners=len(dead))
        return released

    async def release_leases(self) -> int:
        """At a clean stop: hand back the calls we claimed but did not finish."""
        self._held_calls.clear()
        async with self.db.transaction() as conn:
            released = _count(await conn.execute(
                "UPDATE calls SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1",
                self.owner))
            if released:
                await notify(conn, "calls:*")
        return released

    async def integrity_check(self) -> str:
        async with self.db.connection() as conn:
            missing = await conn.fetchval(
                "SELECT COUNT(*) FROM events e WHERE NOT EXISTS "
                "(SELECT 1 FROM calls c WHERE c.pk = e.call_pk)")
        return "ok" if not missing else f"{missing} events without their call"

    async def probe(self) -> StoreHealth:
        """Can we still reach the server and write? One short transaction that changes
        nothing (a temporary table would need a catalog write; a row lock is enough)."""
        try:
            with anyio.fail_after(2):
                async with self.db.transaction() as conn:
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.owner)
                    if await conn.fetchval("SELECT pg_is_in_recovery()"):
                        return StoreHealth(ok=False, problem=f"PostgreSQL at {self.db.where.host}"
                                           " is read-only (a standby)")
        except (StoreError, TimeoutError) as exc:
            return StoreHealth(ok=False, problem=str(exc) or "PostgreSQL did not answer in 2 s")
        return StoreHealth(ok=True)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            if self._heartbeat is not None:
                heartbeat, self._heartbeat = self._heartbeat, None
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await heartbeat
            if self._listener is not None:
                listener, self._listener = self._listener, None
                with contextlib.suppress(Exception):
                    await listener.close(timeout=2)
            await self.db.close()

    # ----------------------------------------------------------------------- deliveries

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

    # ----------------------------------------------------------------------- downloads

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

    async def record_download_progress(
            self, items: Sequence[tuple[DownloadJob, DownloadProgress]]) -> None:
        await self.downloads.record_download_progress(items)

    # ----------------------------------------------------------------------- discovery

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

    # ----------------------------------------------------------------------- retention

    async def prune_settled(self, before: float, *, limit: int, dry_run: bool = False,
                            after: int = 0) -> list[PrunedCall]:
        return await self.retention.prune_settled(before, limit=limit, dry_run=dry_run,
                                                  after=after)

    async def reclaim_space(self) -> int:
        return await self.retention.reclaim_space()

    async def vacuum(self) -> None:
        await self.retention.vacuum()

    async def table_stats(self) -> TableStats:
        return await self.retention.table_stats()

    # ------------------------------------------- operator (``postgres_operator.py``)

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


_STATE = STATE  # a call's state for ``counts`` (``operator.py``, shared with SQLite)


def _readable(row: asyncpg.Record, recordings: Sequence[RecordingState]) -> TrackedCall:
    """The call, with a placeholder for metadata that cannot be decoded (as the SQLite store
    does): such a call is set aside at its next claim, and ``status`` must still show it."""
    try:
        return rows.call_from_row(row, recordings)
    except (ValueError, RecursionError):
        values = list(row)
        values[8] = json.dumps(UNREADABLE_METADATA)
        return rows.call_from_row(values, recordings)


def _count(status: str) -> int:
    """The row count of a command tag (``UPDATE 3``)."""
    return int(status.rsplit(" ", 1)[-1])


def _track_params(call: NewCall, now: float) -> tuple[Any, ...]:
    if not call.metadata:  # discovered calls: no copy and no encoder for each one
        return (call.provider, call.call_id, "{}", call.webhook_url, now)
    try:
        metadata = json.dumps(dict(call.metadata))
    except (ValueError, TypeError, RecursionError) as exc:
        raise PermanentStoreError(f"cannot store the metadata of {call.provider} "
                                  f"{call.call_id}: {exc!r}"[:300]) from exc
    return (call.provider, call.call_id, metadata, call.webhook_url, now)


if TYPE_CHECKING:
    def _fulfils_the_contract(store: PostgresStore) -> Store:
        return store


def _event(row: asyncpg.Record) -> StoredEvent:
    return StoredEvent(seq=row[0], id=row[1], provider=row[2], call_id=row[3], type=row[4],
                       occurred_at=row[5], body=bytes(row[6]))
