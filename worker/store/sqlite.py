"""The SQLite implementation of the Store Protocol (aiosqlite, one connection per process).

Why it is safe to share one file between the daemon and ``callwatch track`` in another
process: WAL lets readers run beside the writer, every write is a short ``BEGIN IMMEDIATE``
transaction (so two writers queue on the busy timeout instead of failing half-way), and
``synchronous=NORMAL`` in WAL mode never corrupts the file, losing at most the last commits
on power loss, never on a process crash.

Inside one process all statements go through one aiosqlite connection; an anyio lock keeps
one task's transaction from interleaving with another's statements.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import aiosqlite
import anyio
import structlog

from worker.model import RecordingState, TrackedCall
from worker.store import jobs, rows
from worker.store.base import Counts, NewCall, PollApplied, StoredEvent, StoreError
from worker.store.deliveries import DeliveryMixin
from worker.store.discovery import DiscoveryMixin
from worker.store.downloads import DownloadMixin

log = structlog.get_logger("worker.store")

LEASE_SECONDS = 120.0
BUSY_TIMEOUT_MS = 10_000
T = TypeVar("T")
P = ParamSpec("P")


def migrations() -> list[tuple[int, str, str]]:
    """The numbered ``migrations/NNNN_name.sql`` files, in order."""
    found = []
    for entry in resources.files("worker.store").joinpath("migrations").iterdir():
        name = entry.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


SCHEMA_VERSION = max(number for number, _, _ in migrations())


def worker_identity() -> str:
    """``host:pid:nonce`` - lets a restarted daemon see which leases belonged to the dead."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class SQLiteStore(DeliveryMixin, DownloadMixin, DiscoveryMixin):
    """Store Protocol (and DeliveryStore, see ``store/deliveries.py``) over one SQLite file."""

    def __init__(self, conn: aiosqlite.Connection, path: Path, owner: str) -> None:
        self._conn = conn
        self.path = path
        self.owner = owner
        self._lock = anyio.Lock()
        self._reader: aiosqlite.Connection | None = None  # see _read_connection
        self._reader_lock = anyio.Lock()

    @classmethod
    async def open(cls, path: Path, owner: str | None = None) -> SQLiteStore:
        """Open (creating if needed) and migrate the database at ``path``."""
        if path.is_dir():  # noqa: ASYNC240 - one stat at start-up
            raise StoreError(f"cannot open database {path}: it is a directory")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            # aiosqlite stops its worker thread on a failed connect; give it a moment to report
            # back while our event loop still runs, or it prints a traceback at exit.
            await anyio.sleep(0.05)
            raise StoreError(f"cannot open database {path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        store = cls(conn, path, owner or worker_identity())
        try:
            await store._setup()
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot use database {path}: {exc}") from exc
            raise
        return store

    async def _setup(self) -> None:
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", f"busy_timeout={BUSY_TIMEOUT_MS}",
                       "foreign_keys=ON", "cache_size=-16000"):
            await self._conn.execute(f"PRAGMA {pragma}")
        async with self._write() as db:
            version = (await (await db.execute("PRAGMA user_version")).fetchone() or (0,))[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"database {self.path} has schema {version}, newer than this "
                                 f"callwatch ({SCHEMA_VERSION}): upgrade callwatch")
            for number, name, sql in migrations():
                if number > version:
                    log.info("store.migrating", migration=name)
                    for statement in _statements(sql):
                        await db.execute(statement)
                    await db.execute(f"PRAGMA user_version={number}")

    async def schema_version(self) -> int:
        row = await self._fetchone("PRAGMA user_version")
        return int(row[0]) if row else 0

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction; rolled back on any error."""
        async with self._lock:
            # Shielded: a cancellation landing while BEGIN runs in the database thread would
            # otherwise leave a transaction open that nobody rolls back.
            with anyio.CancelScope(shield=True):
                await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._conn.execute("ROLLBACK")
                raise
            with anyio.CancelScope(shield=True):
                await self._conn.execute("COMMIT")

    async def _fetchall(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        async with self._lock:
            return list(await self._conn.execute_fetchall(sql, params))

    async def _fetchone(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        found = await self._fetchall(sql, params)
        return found[0] if found else None

    # ----------------------------------------------------------------------- calls

    _TRACK = ("INSERT INTO calls (provider, call_id, metadata, webhook_url, tracked_at, "
              "updated_at, next_poll_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
              "ON CONFLICT (provider, call_id) DO NOTHING")

    async def track(self, call: NewCall, now: float) -> bool:
        async with self._write() as db:
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
        async with self._write() as db:
            cursor = await db.executemany(self._TRACK,
                                          [_track_params(call, now) for call, now in calls])
            return cursor.rowcount

    async def claim_due_calls(self, provider: str, now: float, limit: int) -> list[TrackedCall]:
        if limit <= 0:
            return []
        # One job on the database thread, one aggregated row however many calls are due
        # (see store/jobs.py): RETURNING the leased rows cost one GIL retake per row, which
        # made claims the pipeline's bottleneck under load.
        claimed, recordings = await self._job(
            jobs.claim_due, provider, now=now, owner=self.owner, until=now + LEASE_SECONDS,
            limit=limit)
        return rows.calls_from_values(claimed, recordings)

    async def _job(self, work: Callable[Concatenate[sqlite3.Connection, P], T],
                   *args: P.args, **kwargs: P.kwargs) -> T:
        """``work(connection, ...)`` on the database thread as one job, under the lock."""
        async with self._lock:
            return await self._unlocked_job(work, *args, **kwargs)

    async def _unlocked_job(self, work: Callable[Concatenate[sqlite3.Connection, P], T],
                            *args: P.args, **kwargs: P.kwargs) -> T:
        """``_job`` for a caller that holds the lock already.

        aiosqlite has no public way to run a function on its thread; ``_execute`` is what
        every one of its own methods uses (the version is pinned in requirements/, and every
        caller here is covered by tests).
        """
        return cast(T, await self._conn._execute(  # type: ignore[no-untyped-call]
            work, self._conn._conn, *args, **kwargs))

    async def _recordings_of(self, db: aiosqlite.Connection,
                             pks: Sequence[int]) -> dict[int, list[RecordingState]]:
        return rows.recordings_by_call(
            await db.execute_fetchall(jobs.RECORDINGS_OF, (json.dumps(list(pks)),)))

    async def apply_poll_results(self, items: Sequence[PollApplied], now: float) -> None:
        if not items:
            return
        # Every parameter (event ids and bodies included) is built before the write lock is
        # taken: the transaction then holds the database only for the statements themselves.
        writes = rows.poll_writes(items, now)
        updates = rows.call_updates(writes.calls)
        if len(updates) == 1 and not writes.events and not writes.recordings:
            # One UPDATE is atomic on its own: a batch that changed nothing but call rows, as
            # most do, needs no BEGIN/COMMIT.
            await self._job(jobs.write_decisions, writes, updates)
        else:
            await self._job(jobs.transaction, jobs.write_decisions, writes, updates)

    async def _apply_writes(self, writes: rows.Writes) -> None:
        """Write decisions inside a transaction the caller has open (it holds the lock)."""
        await self._unlocked_job(jobs.write_decisions, writes, rows.call_updates(writes.calls))

    async def next_due_at(self, provider: str) -> float | None:
        row = await self._fetchone(rows.NEXT_DUE, (provider,))
        return row[0] if row and row[0] is not None else None

    async def make_due(self, provider: str, call_id: str, now: float) -> bool:
        # MIN: a call already overdue keeps its place in the queue.
        async with self._write() as db:
            cursor = await db.execute(
                "UPDATE calls SET next_poll_at = MIN(next_poll_at, ?) WHERE provider = ? "
                "AND call_id = ? AND next_poll_at IS NOT NULL AND terminal IS NULL",
                (now, provider, call_id))
            return cursor.rowcount == 1

    async def get_call(self, provider: str, call_id: str) -> TrackedCall | None:
        async with self._lock:
            found = list(await self._conn.execute_fetchall(
                f"SELECT {rows.CALL_COLUMNS} FROM calls "
                "WHERE provider = ? AND call_id = ?", (provider, call_id)))
            if not found:
                return None
            recordings = await self._recordings_of(self._conn, [found[0]["pk"]])
        return rows.call_from_row(found[0], recordings.get(found[0]["pk"], ()))

    async def list_calls(self, *, limit: int, include_terminal: bool) -> list[TrackedCall]:
        where = "" if include_terminal else "WHERE terminal IS NULL"
        async with self._lock:
            found = list(await self._conn.execute_fetchall(
                f"SELECT {rows.CALL_COLUMNS} FROM calls {where} "
                "ORDER BY tracked_at DESC, pk DESC LIMIT ?", (limit,)))
            recordings = await self._recordings_of(self._conn, [r["pk"] for r in found])
        return [rows.call_from_row(r, recordings.get(r["pk"], ())) for r in found]

    # ----------------------------------------------------------------------- outbox

    _EVENT_SELECT = ("SELECT e.seq, e.id, c.provider, c.call_id, e.type, e.occurred_at, e.body "
                     "FROM events e JOIN calls c ON c.pk = e.call_pk ")

    async def call_events(self, provider: str, call_id: str) -> list[StoredEvent]:
        found = await self._fetchall(
            self._EVENT_SELECT + "WHERE c.provider = ? AND c.call_id = ? ORDER BY e.seq",
            (provider, call_id))
        return [_event(r) for r in found]

    async def events_after(self, seq: int, limit: int) -> list[StoredEvent]:
        found = await self._fetchall(self._EVENT_SELECT + "WHERE e.seq > ? ORDER BY e.seq LIMIT ?",
                                     (seq, limit))
        return [_event(r) for r in found]

    async def counts(self) -> Counts:
        """Totals, read on a connection of their own (``_read_connection``).

        Counting calls by state reads every row: about 0.2 s at 100 000 calls. On the
        store's one connection that stalled every claim and commit behind it, every 5 s
        (the STATUS= line), and was most of the scale benchmark's p99 lag.
        """
        async with self._reader_lock:
            db = await self._read_connection()
            by_state = {
                (r[0], r[1]): r[2]
                for r in await db.execute_fetchall(
                    "SELECT provider, COALESCE(terminal, status), COUNT(*) FROM calls "
                    "GROUP BY provider, COALESCE(terminal, status)")
            }
            # Events are never deleted, so the last seq is their number: no scan of the outbox.
            [(events,)] = await db.execute_fetchall("SELECT COALESCE(MAX(seq), 0) FROM events")
            [(due,)] = await db.execute_fetchall(
                "SELECT MIN(next_poll_at) FROM calls WHERE next_poll_at IS NOT NULL")
        return Counts(calls_by_state=by_state, events=events, oldest_due_at=due)

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
        host = socket.gethostname()
        owners = await self._fetchall("SELECT DISTINCT lease_owner FROM calls "
                                      "WHERE lease_owner IS NOT NULL")
        dead = [r[0] for r in owners if r[0] != self.owner and _owner_is_dead(r[0], host)]
        released = 0
        if dead:
            async with self._write() as db:
                for owner in dead:
                    cursor = await db.execute("UPDATE calls SET lease_owner = NULL, "
                                              "lease_until = NULL WHERE lease_owner = ?", (owner,))
                    released += cursor.rowcount
        if released:
            log.info("store.leases_recovered", calls=released, owners=len(dead))
        return released

    async def release_leases(self) -> int:
        """At a clean stop: hand back what we claimed but did not finish, for the next start."""
        async with self._write() as db:
            cursor = await db.execute("UPDATE calls SET lease_owner = NULL, lease_until = NULL "
                                      "WHERE lease_owner = ?", (self.owner,))
            return cursor.rowcount

    async def integrity_check(self) -> str:
        row = await self._fetchone("PRAGMA integrity_check")
        return str(row[0]) if row else "no answer"

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            if self._reader is not None:
                await self._reader.close()
            await self._conn.close()


def _track_params(call: NewCall, now: float) -> tuple[Any, ...]:
    return (call.provider, call.call_id, json.dumps(dict(call.metadata)), call.webhook_url,
            now, now, now)


def _event(row: sqlite3.Row) -> StoredEvent:
    return StoredEvent(seq=row[0], id=row[1], provider=row[2], call_id=row[3], type=row[4],
                       occurred_at=row[5], body=bytes(row[6]))


def _owner_is_dead(owner: str, host: str) -> bool:
    """True when ``owner`` is a worker on this host whose process no longer runs."""
    parts = owner.split(":")
    if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return True  # our pid, another nonce: a previous life of this process id
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _statements(sql: str) -> list[str]:
    """Split a migration file into statements (our migrations hold no ';' in literals)."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
