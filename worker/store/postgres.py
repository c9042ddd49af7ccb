"""The PostgreSQL implementation of the store: several workers on one database.

What makes sharing safe (CONTRACT.md, "Database: SQLite or PostgreSQL"):

- **Claims** take rows with ``FOR UPDATE SKIP LOCKED`` and write a lease (owner, until) in
  the same statement: two workers never hold one call, delivery or download at once.
- **Leases live as long as their worker.** A heartbeat renews every lease this store holds
  each ``lease_seconds / 3``; a worker that dies (SIGKILL, a machine that vanishes) stops
  renewing and its rows are free again ``lease_seconds`` later. So a slow download keeps its
  lease, and nobody waits for a dead worker longer than that.
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
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import Any

import anyio
import asyncpg
import structlog

from worker.database_url import PostgresUrl, redact
from worker.model import TrackedCall
from worker.store import postgres_sql as sql
from worker.store import rows
from worker.store.base import Counts, NewCall, PollApplied, StoredEvent, StoreError
from worker.store.postgres_deliveries import PostgresDeliveries
from worker.store.postgres_downloads import PostgresDownloads

log = structlog.get_logger("worker.store")

CONNECT_TIMEOUT = 10.0


def migrations() -> list[tuple[int, str, str]]:
    """The numbered ``migrations_pg/NNNN_name.sql`` files, in order."""
    found = []
    for entry in resources.files("worker.store").joinpath("migrations_pg").iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.name,
                          entry.read_text(encoding="utf-8")))
    return sorted(found)


SCHEMA_VERSION = max(number for number, _, _ in migrations())


def worker_identity() -> str:
    """``host:pid:nonce``: which worker holds a lease, for operators and ``recover``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Connections:
    """The pool and the error boundary: every driver error leaves here as a StoreError."""

    def __init__(self, pool: asyncpg.Pool, where: PostgresUrl) -> None:
        self.pool = pool
        self.where = where

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        with self.translated():
            async with self.pool.acquire() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def transaction(self, *locks: int) -> AsyncIterator[asyncpg.Connection]:
        """One transaction, holding the advisory ``locks`` (in order) until it ends."""
        async with self.connection() as conn, conn.transaction():
            for key in locks:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", key)
            yield conn

    @contextlib.contextmanager
    def translated(self) -> Any:
        try:
            yield
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            message = redact(f"{type(exc).__name__}: {exc}", self.where.password)
            raise StoreError(f"PostgreSQL at {self.where.host}: {message}") from exc


class PostgresStore(PostgresDeliveries, PostgresDownloads):
    """Store, DeliveryStore and DownloadStore over one PostgreSQL database."""

    def __init__(self, db: Connections, owner: str, lease_seconds: float) -> None:
        self.db = db
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.path = db.where  # what status and logs show: the URL without its password
        self._heartbeat: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._changed = anyio.Event()

    @classmethod
    async def open(cls, where: PostgresUrl, *, lease_seconds: float = 30.0,
                   owner: str | None = None, pool_size: int = 8,
                   migrate: bool = True) -> PostgresStore:
        """Connect and bring the schema up to date; one clear StoreError when it cannot."""
        try:
            pool = await asyncpg.create_pool(where.dsn(), min_size=1, max_size=pool_size,
                                             timeout=CONNECT_TIMEOUT, command_timeout=60)
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            reason = redact(str(exc) or type(exc).__name__, where.password)
            raise StoreError(f"cannot connect to PostgreSQL at {where.host}: {reason}") from exc
        store = cls(Connections(pool, where), owner or worker_identity(), lease_seconds)
        try:
            await (store.migrate() if migrate else store._check_version())
        except BaseException:
            await pool.close()
            raise
        return store

    async def migrate(self) -> int:
        """Apply the missing migrations under an advisory lock; return how many ran."""
        applied = 0
        async with self.db.transaction(sql.MIGRATE_LOCK) as conn:
            await conn.execute(sql.SCHEMA_TABLE)
            version = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM callwatch_schema")
            _refuse_newer(version, self.db.where)
            for number, name, text in migrations():
                if number > version:
                    log.info("store.migrating", migration=name)
                    await conn.execute(text)
                    await conn.execute("INSERT INTO callwatch_schema VALUES ($1, $2, $3)",
                                       number, name, time.time())
                    applied += 1
        return applied

    async def _check_version(self) -> None:
        _refuse_newer(await self.schema_version(), self.db.where)

    async def schema_version(self) -> int:
        async with self.db.connection() as conn:
            exists = await conn.fetchval("SELECT to_regclass('callwatch_schema') IS NOT NULL")
            if not exists:
                return 0
            return int(await conn.fetchval(
                "SELECT COALESCE(MAX(version), 0) FROM callwatch_schema"))

    # ----------------------------------------------------------------------- calls

    async def track(self, call: NewCall, now: float) -> bool:
        async with self.db.transaction() as conn:
            pk = await conn.fetchval(sql.TRACK, *_track_params(call, now))
            if pk is not None:
                await _notify(conn, f"calls:{call.provider}")
            return pk is not None

    async def track_many(self, calls: Sequence[tuple[NewCall, float]]) -> int:
        """Track many ``(call, now)`` in one transaction; return how many were new."""
        if not calls:
            return 0
        async with self.db.transaction() as conn:
            before = await conn.fetchval("SELECT COUNT(*) FROM calls")
            await conn.executemany(sql.TRACK, [_track_params(c, now) for c, now in calls])
            after = await conn.fetchval("SELECT COUNT(*) FROM calls")
            for provider in sorted({c.provider for c, _ in calls}):
                await _notify(conn, f"calls:{provider}")
        return int(after - before)

    async def claim_due_calls(self, provider: str, now: float, limit: int) -> list[TrackedCall]:
        if limit <= 0:
            return []
        self.start_heartbeat()
        async with self.db.connection() as conn:
            claimed = await conn.fetch(sql.CLAIM_CALLS, provider, now, limit, self.owner,
                                       now + self.lease_seconds)
            with_recordings = [r[0] for r in claimed if r[-1]]
            recordings = (await conn.fetch(sql.RECORDINGS_OF, with_recordings)
                          if with_recordings else [])
        by_call = rows.recordings_by_call(recordings)
        calls = [rows.call_from_row(r, by_call.get(r[0], ())) for r in claimed]
        calls.sort(key=lambda c: c.next_poll_at)
        return calls

    async def apply_poll_results(self, items: Sequence[PollApplied], now: float) -> None:
        if not items:
            return
        writes = rows.poll_writes(items, now)
        locks = (sql.EVENTS_LOCK,) if writes.events else ()
        async with self.db.transaction(*locks) as conn:
            await self._write(conn, writes)

    async def _write(self, conn: asyncpg.Connection, writes: rows.Writes) -> None:
        """Persist decisions in the caller's transaction (which holds EVENTS_LOCK if needed).

        Calls whose lease another worker holds now are left alone, with their events and
        recordings: that worker's poll decides them again, and the outbox's unique keys
        keep what both would emit once.
        """
        last = list({p[-1]: p for p in writes.calls}.values())
        columns = [list(col) for col in zip(*last, strict=True)]
        written = {r[0] for r in await conn.fetch(sql.UPDATE_CALLS, *columns, self.owner)}
        recordings = [tuple(r.values()) for r in writes.recordings if r["call_pk"] in written]
        if recordings:
            await conn.executemany(sql.RECORDING_UPSERT, recordings)
        events = [e for e in writes.events if e[1] in written]
        if events:
            inserted = await conn.fetch(sql.EVENT_INSERT,
                                        *[list(col) for col in zip(*events, strict=True)])
            if inserted:
                await _notify(conn, "events")

    async def next_due_at(self, provider: str) -> float | None:
        async with self.db.connection() as conn:
            due = await conn.fetchval(sql.NEXT_DUE, provider, self.owner)
        return float(due) if due is not None else None

    async def make_due(self, provider: str, call_id: str, now: float) -> bool:
        async with self.db.transaction() as conn:
            status = await conn.execute(sql.MAKE_DUE, now, provider, call_id)
            changed = bool(status.endswith(" 1"))
            if changed:
                await _notify(conn, f"calls:{provider}")
        return changed

    async def get_call(self, provider: str, call_id: str) -> TrackedCall | None:
        async with self.db.connection() as conn:
            found = await conn.fetchrow(f"SELECT {rows.CALL_COLUMNS} FROM calls "
                                        "WHERE provider = $1 AND call_id = $2", provider, call_id)
            if found is None:
                return None
            recordings = await conn.fetch(sql.RECORDINGS_OF, [found[0]])
        return rows.call_from_row(found, rows.recordings_by_call(recordings).get(found[0], ()))

    async def list_calls(self, *, limit: int, include_terminal: bool) -> list[TrackedCall]:
        where = "" if include_terminal else "WHERE terminal IS NULL"
        async with self.db.connection() as conn:
            found = await conn.fetch(f"SELECT {rows.CALL_COLUMNS} FROM calls {where} "
                                     "ORDER BY tracked_at DESC, pk DESC LIMIT $1", limit)
            recordings = await conn.fetch(sql.RECORDINGS_OF, [r[0] for r in found])
        by_call = rows.recordings_by_call(recordings)
        return [rows.call_from_row(r, by_call.get(r[0], ())) for r in found]

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
        async with self.db.connection() as conn:
            by_state = {(r[0], r[1]): r[2] for r in await conn.fetch(
                "SELECT provider, COALESCE(terminal, status), COUNT(*) FROM calls "
                "GROUP BY provider, COALESCE(terminal, status)")}
            events = await conn.fetchval("SELECT COALESCE(MAX(seq), 0) FROM events")
            due = await conn.fetchval(
                "SELECT MIN(next_poll_at) FROM calls WHERE next_poll_at IS NOT NULL")
        return Counts(calls_by_state=by_state, events=int(events), oldest_due_at=due)

    # ----------------------------------------------------------------------- changes

    async def wait_for_change(self, timeout: float) -> bool:  # noqa: ASYNC109 - a wake-up
        """Wait until any process tracks a call, makes one due or writes events (True), or
        ``timeout`` passes (False). Listens on first use; without a listener, just waits."""
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
                self._listener = await asyncpg.connect(self.db.where.dsn(),
                                                       timeout=CONNECT_TIMEOUT)
                await self._listener.add_listener(sql.CHANNEL, self._on_notify)
        except StoreError as exc:
            log.warning("store.listen_failed", error=str(exc))
            self._listener = None

    def _on_notify(self, _conn: object, _pid: int, _channel: str, _payload: str) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    # ----------------------------------------------------------------------- leases

    def start_heartbeat(self) -> None:
        """Renew this worker's leases while it lives (started by its first claim).

        An asyncio task rather than a task-group child: the store outlives the daemon's
        task group by design (it is opened before and closed after), and ``close`` ends it.
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
        """Push every lease this worker holds to ``now + lease_seconds``."""
        async with self.db.transaction() as conn:
            for statement in sql.RENEW:
                await conn.execute(statement, self.owner, now + self.lease_seconds)

    async def recover(self) -> int:
        """Release leases of workers on this host whose process is gone (a restart after a
        crash takes its work back at once); other hosts' expire after lease_seconds."""
        from worker.store.sqlite import _owner_is_dead

        host = socket.gethostname()
        async with self.db.connection() as conn:
            owners = [r[0] for r in await conn.fetch(
                "SELECT DISTINCT lease_owner FROM calls WHERE lease_owner IS NOT NULL")]
        dead = [o for o in owners if o != self.owner and _owner_is_dead(o, host)]
        if not dead:
            return 0
        async with self.db.transaction() as conn:
            status = await conn.execute("UPDATE calls SET lease_owner = NULL, lease_until = NULL "
                                        "WHERE lease_owner = ANY($1)", dead)
        released = int(status.split()[-1])
        log.info("store.leases_recovered", calls=released, owners=len(dead))
        return released

    async def release_leases(self) -> int:
        """At a clean stop: hand back the calls we claimed but did not finish."""
        async with self.db.transaction() as conn:
            status = await conn.execute("UPDATE calls SET lease_owner = NULL, lease_until = NULL "
                                        "WHERE lease_owner = $1", self.owner)
            await _notify(conn, "calls:*")
        return int(status.split()[-1])

    async def integrity_check(self) -> str:
        async with self.db.connection() as conn:
            await conn.fetchval("SELECT 1")
        return "ok"

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            if self._heartbeat is not None:
                self._heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._heartbeat
            if self._listener is not None:
                with contextlib.suppress(Exception):
                    await self._listener.close(timeout=2)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.db.pool.close(), 5)


async def _notify(conn: asyncpg.Connection, payload: str) -> None:
    """Sent when the transaction commits (and dropped if it rolls back)."""
    await conn.execute("SELECT pg_notify($1, $2)", sql.CHANNEL, payload)


def _refuse_newer(version: int, where: PostgresUrl) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(f"database {where} has schema {version}, newer than this "
                         f"callwatch ({SCHEMA_VERSION}): upgrade callwatch")


def _track_params(call: NewCall, now: float) -> tuple[Any, ...]:
    return (call.provider, call.call_id, json.dumps(dict(call.metadata)), call.webhook_url, now)


def _event(row: asyncpg.Record) -> StoredEvent:
    return StoredEvent(seq=row[0], id=row[1], provider=row[2], call_id=row[3], type=row[4],
                       occurred_at=row[5], body=bytes(row[6]))
