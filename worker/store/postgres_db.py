"""The PostgreSQL connection layer: the pool, the error boundary, migrations, shared writes.

Every asyncpg error leaves this layer as a ``StoreError`` subclass, decided by its SQLSTATE
class: a lost connection, a server shutting down, a serialization failure or a lack of
resources may pass (``TransientStoreError``: retry); a constraint or data the server refuses
will not (``PermanentStoreError``: narrow down and set aside). Messages never hold the
password.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from importlib import resources

import anyio
import asyncpg
import structlog

from worker.database_url import PostgresUrl, redact
from worker.store import postgres_sql as sql
from worker.store import rows
from worker.store.errors import PermanentStoreError, StoreError, TransientStoreError

log = structlog.get_logger("worker.store")

CONNECT_TIMEOUT = 10.0
# A statement on a connection that died under it (a failover, pg_terminate_backend) must fail
# and be retried within seconds, not hold a relay or a lane for a minute.
COMMAND_TIMEOUT = 15.0
OPERATION_TIMEOUT = 30.0  # acquire + a whole transaction (a claim or a group commit)
# SQLSTATE classes worth a retry: connection exception, transaction rollback (serialization,
# deadlock), insufficient resources, operator intervention (shutdown, restart), system error.
_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")
# InternalClientError: the driver's own state got confused by a connection dying under it
# ("cannot switch to state 15"); the connection is dropped, the next one is fine.
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
                  OSError, asyncio.TimeoutError)


def migrations() -> list[tuple[int, str, str]]:
    """The numbered ``migrations_pg/NNNN_name.sql`` files, in order."""
    found = []
    for entry in resources.files("worker.store").joinpath("migrations_pg").iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.name,
                          entry.read_text(encoding="utf-8")))
    return sorted(found)


SCHEMA_VERSION = max(number for number, _, _ in migrations())


def is_transient(exc: BaseException) -> bool:
    """Whether the same statement may succeed later (see the module docstring)."""
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str):
        return state[:2] in _TRANSIENT_CLASSES
    return isinstance(exc, OSError | asyncio.TimeoutError | asyncpg.InterfaceError
                      | asyncpg.InternalClientError)


async def keep_session(_conn: asyncpg.Connection) -> None:
    """The pool's reset when a connection goes back: nothing beyond asyncpg's own rollback of
    an open transaction. Its default also sends ``pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL``, a round trip per transaction for state the store never leaves on
    a pooled connection: its locks are transaction-level, it sets nothing, and it listens on
    a connection of its own. (docs/benchmarks.md, section 10e: the lean reset.)"""


class Connections:
    """The pool and the error boundary: every driver error leaves here as a StoreError."""

    def __init__(self, pool: asyncpg.Pool, where: PostgresUrl) -> None:
        self.pool = pool
        self.where = where

    @classmethod
    async def connect(cls, where: PostgresUrl, pool_size: int) -> Connections:
        try:
            pool = await asyncpg.create_pool(where.dsn(), min_size=1, max_size=pool_size,
                                             timeout=CONNECT_TIMEOUT,
                                             command_timeout=COMMAND_TIMEOUT,
                                             reset=keep_session)
        except _DRIVER_ERRORS as exc:
            reason = redact(str(exc) or type(exc).__name__, where.password)
            kind = TransientStoreError if is_transient(exc) else PermanentStoreError
            raise kind(f"cannot connect to PostgreSQL at {where.host}: {reason}") from exc
        return cls(pool, where)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        # Bounded, whole: after a failover or cut connections asyncpg can leave a connection
        # in a state where the next operation or its release never returns ("cannot switch
        # to state 15"); the deadline turns that into a TimeoutError, translated as
        # transient, and the pool drops the connection instead of handing it out again.
        with self.translated(), anyio.fail_after(OPERATION_TIMEOUT):
            conn = await self.pool.acquire(timeout=CONNECT_TIMEOUT)
            try:
                yield conn
            finally:
                # The work is done (or has failed on its own): a connection that dies while
                # it is handed back (its reset fails after a cut) is dropped by the pool and
                # must not turn a committed claim into an error, whose leased rows nobody
                # would then handle while our heartbeat kept renewing them.
                with contextlib.suppress(*_DRIVER_ERRORS):
                    await self.pool.release(conn)

    @contextlib.asynccontextmanager
    async def transaction(self, *locks: int) -> AsyncIterator[asyncpg.Connection]:
        """One transaction, holding the advisory ``locks`` (in order) until it ends.

        Claims run in one too, even a single UPDATE: a claim is committed only once its rows
        reached us. Autocommitted, a claim whose reply was lost to a dying connection stayed
        leased to this worker, and its heartbeat renewed those leases until it stopped.
        """
        async with self.connection() as conn, conn.transaction():
            for key in locks:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", key)
            yield conn

    @contextlib.contextmanager
    def translated(self) -> Iterator[None]:
        try:
            yield
        except _DRIVER_ERRORS as exc:
            message = redact(f"{type(exc).__name__}: {exc}", self.where.password)[:300]
            kind = TransientStoreError if is_transient(exc) else PermanentStoreError
            raise kind(f"PostgreSQL at {self.where.host}: {message}") from exc

    async def migrate(self) -> int:
        """Apply the missing migrations under an advisory lock; return how many ran.

        Three workers starting at once on an empty database: the first takes the lock and
        migrates, the others wait for it and then find nothing to do.
        """
        applied = 0
        async with self.transaction(sql.MIGRATE_LOCK) as conn:
            await conn.execute(sql.SCHEMA_TABLE)
            version = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM callwatch_schema")
            self.refuse_newer(version)
            for number, name, text in migrations():
                if number > version:
                    log.info("store.migrating", migration=name)
                    await conn.execute(text)
                    await conn.execute("INSERT INTO callwatch_schema VALUES ($1, $2, $3)",
                                       number, name, time.time())
                    applied += 1
        return applied

    async def schema_version(self) -> int:
        async with self.connection() as conn:
            if not await conn.fetchval("SELECT to_regclass('callwatch_schema') IS NOT NULL"):
                return 0
            return int(await conn.fetchval(
                "SELECT COALESCE(MAX(version), 0) FROM callwatch_schema"))

    def refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise PermanentStoreError(f"database {self.where} has schema {version}, newer than "
                                      f"this callwatch ({SCHEMA_VERSION}): upgrade callwatch")

    async def close(self) -> None:
        with contextlib.suppress(*_DRIVER_ERRORS, StoreError):
            await asyncio.wait_for(self.pool.close(), 5)


async def notify(conn: asyncpg.Connection, payload: str) -> None:
    """Sent to listeners when the transaction commits (and dropped if it rolls back)."""
    await conn.execute("SELECT pg_notify($1, $2)", sql.CHANNEL, payload)


async def write_decisions(conn: asyncpg.Connection, writes: rows.Writes, owner: str) -> None:
    """Persist decisions in the caller's transaction (which holds EVENTS_LOCK if any).

    Calls another worker holds now are left alone, with their events and recordings: that
    worker's poll decides them again, and the outbox's unique keys keep what both would
    emit once.
    """
    if any(e[1] is None for e in writes.events):
        raise PermanentStoreError("an event without a stored call cannot be written")
    last = list({p[-1]: p for p in writes.calls}.values())
    columns = [list(col) for col in zip(*last, strict=True)]
    written = {r[0] for r in await conn.fetch(sql.UPDATE_CALLS, *columns, owner)}
    recordings = [tuple(r.values()) for r in writes.recordings if r["call_pk"] in written]
    if recordings:
        await conn.executemany(sql.RECORDING_UPSERT, recordings)
    events = [e for e in writes.events if e[1] in written]
    if events:
        inserted = await conn.fetch(sql.EVENT_INSERT,
                                    *[list(col) for col in zip(*events, strict=True)])
        if inserted:
            await notify(conn, "events")
