"""The SQLite connector: one file, one connection, a small public API the SQL modules use.

What the SQLite backend's parts (``sqlite.py`` for calls, ``deliveries.py``, ``downloads.py``)
share, by composition: each holds a ``SQLiteDatabase`` and calls only its public methods.

- ``transaction()``: one ``BEGIN IMMEDIATE`` transaction on the aiosqlite connection;
- ``fetchall``/``fetchone``: reads, serialised with the transactions by one lock;
- ``job(work, ...)``: ``work(sqlite3_connection, ...)`` as one piece of work on a thread
  (several statements, one round trip: see ``jobs.py`` for why that matters). It runs on a
  job thread of our own (``_JobThread``) with the raw ``sqlite3`` connection this module
  opened itself (the connector handed to ``aiosqlite.Connection``), never through
  aiosqlite's private API. The store lock keeps the aiosqlite thread and a job from ever
  using the connection at once (a job's await is shielded, so a cancelled caller cannot
  release the lock while its job still runs), and the connection is opened with
  ``check_same_thread=False`` for exactly that. (``anyio.to_thread`` was measured first:
  three to four times aiosqlite's round trip, see docs/benchmarks.md.)
- ``probe()``: is the file we opened still the one at our path, and can we still write?

Every ``sqlite3`` error leaves as a ``StoreError`` subclass (``translate``).

Why it is safe to share one file between the daemon and ``callwatch track`` in another
process: WAL lets readers run beside the writer, every write is a short ``BEGIN IMMEDIATE``
transaction (so two writers queue on the busy timeout instead of failing half-way), and
``synchronous=NORMAL`` in WAL mode never corrupts the file, losing at most the last commits
on power loss, never on a process crash.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import aiosqlite
import anyio
import structlog

from worker.store import jobs
from worker.store.base import StoreHealth
from worker.store.errors import PermanentStoreError, StoreError, TransientStoreError

log = structlog.get_logger("worker.store")

BUSY_TIMEOUT_MS = 10_000
AUTO_VACUUM_INCREMENTAL = 2  # PRAGMA auto_vacuum's answer for INCREMENTAL
VACUUM_AT_START_BYTES = 64 * 1024 * 1024  # an older file this small is converted at start
QUICK_CHECK_SECONDS = 5.0  # the bound on the check at open: a huge file is not read whole
T = TypeVar("T")
P = ParamSpec("P")

# Codes after which the same statement may work later; any other error is permanent.
_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY",
              "SQLITE_CANTOPEN", "SQLITE_PROTOCOL", "SQLITE_NOLFS", "SQLITE_INTERRUPT")


def translate(exc: sqlite3.Error, where: str) -> StoreError:
    """The ``StoreError`` for a driver error (``raise translate(exc, ...) from exc``)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    kind = TransientStoreError if name.startswith(_TRANSIENT) else PermanentStoreError
    return kind(f"{where}: {exc}" + (f" ({name})" if name else ""))


def migrations() -> list[tuple[int, str, str]]:
    """The numbered ``migrations/NNNN_name.sql`` files, in order."""
    found = []
    for entry in resources.files("worker.store").joinpath("migrations").iterdir():
        name = entry.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


SCHEMA_VERSION = max(number for number, _, _ in migrations())


class _JobThread:
    """One daemon thread that runs jobs in order and hands results back to the event loop.

    The same hand-off as aiosqlite's own thread (a queue in, ``call_soon_threadsafe`` out).
    A daemon thread: it can never keep a stopped process alive.
    """

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[asyncio.Future[Any], Callable[[], Any]] | None]
        self._queue = queue.SimpleQueue()
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            future, work = item
            try:
                result = work()
            except BaseException as exc:  # handed to the awaiting task
                future.get_loop().call_soon_threadsafe(_settle, future, None, exc)
            else:
                future.get_loop().call_soon_threadsafe(_settle, future, result, None)

    async def run(self, work: Callable[[], T]) -> T:
        if self._stopped:  # the thread is gone: a job queued now would wait forever
            raise PermanentStoreError("the database is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put((future, work))
        with anyio.CancelScope(shield=True):  # the job runs to its end: so does the wait
            result = await future
        return result  # noqa: RET504 - mypy: a CancelScope may swallow, so no return inside

    def stop(self) -> None:
        self._stopped = True
        self._queue.put(None)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if not future.done():
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)


class SQLiteDatabase:
    """One SQLite file behind one connection; see the module docstring."""

    def __init__(self, conn: aiosqlite.Connection, raw: sqlite3.Connection, path: Path) -> None:
        self.path = path
        self._conn = conn
        self._raw = raw
        self._lock = anyio.Lock()
        self._jobs = _JobThread(f"callwatch-sqlite {path.name}")
        self._identity = _identity(path)
        self._closed = False
        self.write_failing_since: float | None = None  # wall time of the first failed write

    @classmethod
    async def open(cls, path: Path) -> SQLiteDatabase:
        """Open (creating if needed), check and migrate the database at ``path``."""
        if path.is_dir():  # noqa: ASYNC240 - one stat at start-up
            raise PermanentStoreError(f"cannot open database {path}: it is a directory")
        opened: list[sqlite3.Connection] = []

        def connector() -> sqlite3.Connection:
            raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            opened.append(raw)
            return raw

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _create_private(path)
            conn = await aiosqlite.Connection(connector, iter_chunk_size=64)
        except (OSError, sqlite3.Error) as exc:
            # aiosqlite stops its worker thread on a failed connect; give it a moment to report
            # back while our event loop still runs, or it prints a traceback at exit.
            await anyio.sleep(0.05)
            raise TransientStoreError(f"cannot open database {path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        database = cls(conn, opened[0], path)
        try:
            await database._setup()
        except BaseException as exc:
            await database.close()
            if isinstance(exc, sqlite3.Error):
                raise translate(exc, f"cannot use database {path}") from exc
            raise
        return database

    async def _setup(self) -> None:
        # auto_vacuum first: it takes effect only on a file with no table yet (a new one), and
        # only before journal_mode=WAL writes the header. Existing files: _adopt_auto_vacuum.
        for pragma in ("auto_vacuum=INCREMENTAL", "journal_mode=WAL", "synchronous=NORMAL",
                       f"busy_timeout={BUSY_TIMEOUT_MS}", "foreign_keys=ON", "cache_size=-16000"):
            await self._conn.execute(f"PRAGMA {pragma}")
        await self._quick_check()
        async with self.transaction() as db:
            version = (await (await db.execute("PRAGMA user_version")).fetchone() or (0,))[0]
            if version > SCHEMA_VERSION:
                raise PermanentStoreError(
                    f"database {self.path} has schema {version}, newer than this "
                    f"callwatch ({SCHEMA_VERSION}): upgrade callwatch")
            for number, name, sql in migrations():
                if number > version:
                    log.info("store.migrating", migration=name)
                    for statement in _statements(sql):
                        await db.execute(statement)
                    await db.execute(f"PRAGMA user_version={number}")
        await self._adopt_auto_vacuum()

    async def _adopt_auto_vacuum(self) -> None:
        """Turn on incremental auto-vacuum in a file made before it was the default.

        Switching needs one VACUUM, which rewrites the whole file and holds the write lock
        while it does: done here, at start, only for a file under ``VACUUM_AT_START_BYTES``
        (seconds at most); a larger one is left as it is, with a warning, until the operator
        runs ``callwatch prune --vacuum`` at a quiet moment. Without it, pruned pages are
        still reused by new rows; the file just never shrinks.
        """
        [(mode,)] = await self._conn.execute_fetchall("PRAGMA auto_vacuum")
        if mode == AUTO_VACUUM_INCREMENTAL:
            return
        size = await self.size_bytes()
        if size > VACUUM_AT_START_BYTES:
            log.warning("store.auto_vacuum_off", database=str(self.path), size_bytes=size,
                        hint="pruned space is reused but not returned to the disk; run "
                             "`callwatch prune --vacuum` once, at a quiet moment")
            return
        await self.vacuum()

    async def vacuum(self) -> None:
        """Rewrite the file with incremental auto-vacuum on (``prune --vacuum``)."""
        async with self._lock:
            try:
                await self._conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
                await self._conn.execute("VACUUM")
            except sqlite3.Error as exc:
                raise translate(exc, f"cannot vacuum {self.path}") from exc
        log.info("store.vacuumed", database=str(self.path), size_bytes=await self.size_bytes())

    async def size_bytes(self) -> int:
        """The database's size: pages in use or free, times the page size (no -wal)."""
        row = await self.fetchone("SELECT page_count * page_size FROM pragma_page_count(), "
                                  "pragma_page_size()")
        return int(row[0]) if row else 0

    async def release_free_pages(self) -> int:
        """Hand free pages back to the file system (``incremental_vacuum``); how many were."""
        return await self.write_job(_incremental_vacuum)

    async def _quick_check(self) -> None:
        """A corrupt file is refused at open, in at most ``QUICK_CHECK_SECONDS``.

        Past the bound the check is interrupted and the file is used as it is: a slow disk
        must not keep the daemon from starting (``callwatch check`` reads it all).
        """
        deadline = time.monotonic() + QUICK_CHECK_SECONDS
        await self._conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            found = list(await self._conn.execute_fetchall("PRAGMA quick_check(1)"))
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", "") != "SQLITE_INTERRUPT":
                raise
            log.warning("store.quick_check_cut_short", database=str(self.path),
                        seconds=QUICK_CHECK_SECONDS)
            return
        finally:
            await self._conn.set_progress_handler(None, 0)  # type: ignore[arg-type] # None: off
        if found and found[0][0] != "ok":
            raise PermanentStoreError(f"database {self.path} is corrupt: {found[0][0]}")

    # ----------------------------------------------------------------- the public API

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction; rolled back on any error, which leaves as a
        ``StoreError`` when it came from the driver."""
        async with self._lock:
            try:
                # Shielded: a cancellation landing while BEGIN runs in the database thread
                # would otherwise leave a transaction open that nobody rolls back.
                with anyio.CancelScope(shield=True):
                    await self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        if self._conn.in_transaction:
                            await self._conn.execute("ROLLBACK")
                    raise
                with anyio.CancelScope(shield=True):
                    await self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._failed()
                raise translate(exc, f"cannot write to {self.path}") from exc
        self.write_failing_since = None

    async def fetchall(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        async with self._lock:
            try:
                return list(await self._conn.execute_fetchall(sql, params))
            except sqlite3.Error as exc:
                raise translate(exc, f"cannot read {self.path}") from exc

    async def fetchone(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        found = await self.fetchall(sql, params)
        return found[0] if found else None

    async def job(self, work: Callable[Concatenate[sqlite3.Connection, P], T],
                  *args: P.args, **kwargs: P.kwargs) -> T:
        """``work(connection, ...)`` on a thread as one piece of work, under the lock."""
        async with self._lock:
            return await self.job_in_transaction(work, *args, **kwargs)

    async def write_job(self, work: Callable[Concatenate[sqlite3.Connection, P], T],
                        *args: P.args, **kwargs: P.kwargs) -> T:
        """``job`` for work that writes: its failure or success is what ``probe`` reports."""
        async with self._lock:
            try:
                result = await self.job_in_transaction(work, *args, **kwargs)
            except StoreError:
                self._failed()
                raise
        self.write_failing_since = None
        return result

    async def job_in_transaction(self, work: Callable[Concatenate[sqlite3.Connection, P], T],
                                 *args: P.args, **kwargs: P.kwargs) -> T:
        """``job`` for a caller inside ``transaction()`` (it holds the lock already)."""
        try:
            return await self._jobs.run(partial(work, self._raw, *args, **kwargs))
        except sqlite3.Error as exc:
            raise translate(exc, f"cannot write to {self.path}") from exc

    def set_trace_callback(self, callback: Callable[[str], object] | None) -> None:
        """Every statement this connection runs goes to ``callback`` (tests: query plans)."""
        self._raw.set_trace_callback(callback)

    def _failed(self) -> None:
        if self.write_failing_since is None:
            self.write_failing_since = time.time()

    async def probe(self) -> StoreHealth:
        """Deleted or replaced under us, refusing writes, or writes failing: not ok."""
        problem = await anyio.to_thread.run_sync(_moved, self.path, self._identity)
        if problem is None:
            try:
                await self.job(jobs.write_probe)
            except StoreError as exc:
                problem = f"database refuses writes: {exc}"
        if problem is None and self.write_failing_since is not None:
            problem = f"writes to {self.path} failing since {self.write_failing_since:.0f}"
        return StoreHealth(ok=problem is None, problem=problem)

    async def close(self) -> None:
        """Close the connection; never raises, a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        self._jobs.stop()
        with anyio.CancelScope(shield=True):
            try:
                await self._conn.close()
            except (sqlite3.Error, ValueError) as exc:  # ValueError: already closed
                log.warning("store.close_failed", database=str(self.path), error=str(exc))


def _incremental_vacuum(db: sqlite3.Connection) -> int:
    # executescript, not execute: the sqlite3 module steps a statement without result
    # columns once, and each step of this pragma frees one page.
    [(before,)] = db.execute("PRAGMA freelist_count").fetchall()
    db.executescript("PRAGMA incremental_vacuum;")
    [(after,)] = db.execute("PRAGMA freelist_count").fetchall()
    return int(before) - int(after)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _moved(path: Path, identity: tuple[int, int] | None) -> str | None:
    """Why ``path`` is no longer the file we opened, or None while it is."""
    if not path.exists():
        return f"database file {path} was deleted while in use"
    if identity is not None and _identity(path) != identity:
        return f"database file {path} was replaced while in use"
    return None


def _statements(sql: str) -> list[str]:
    """Split a migration file into statements (our migrations hold no ';' in literals).

    A piece ends a statement only when SQLite says it is complete: a trigger's body holds
    statements of its own between BEGIN and END.
    """
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    statements: list[str] = []
    pending = ""
    for piece in "\n".join(lines).split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending.strip().removesuffix(";").strip())
            pending = ""
    if pending.strip(" \n;"):
        statements.append(pending.strip().removesuffix(";").strip())
    return statements


def _create_private(path: Path) -> None:
    """Create a missing database file 0600 whatever the umask: it holds signed recording URLs
    and webhook URLs with their tokens. SQLite gives ``-wal`` and ``-shm`` the mode of the
    database file, so they follow. An existing file keeps the mode its owner chose."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)  # the umask may have taken bits away; never adds any
    finally:
        os.close(fd)
