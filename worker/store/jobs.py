"""Work that runs on the database thread as one job: several statements, one round trip.

Why: the sqlite3 module releases the GIL around every step of a statement (once per row
fetched or written) and aiosqlite's thread takes it again for every job it picks up and
every result it hands back. While the event loop is busy each retake waits its turn: about
1.3 ms at saturation on the benchmark machine (``docs/benchmarks.md``), against 0.6 ms of
SQLite work for a whole 32-call claim. So the hot paths are built to take few steps: a
claim reads its calls as one aggregated row and writes its leases in one statement (and
parses the row here, so the event loop gets Python lists), and a transaction goes to the
thread as one job instead of one round trip per statement.

Everything here is plain ``sqlite3`` code, called with the connection on its own thread
(``SQLiteDatabase.job``); nothing here awaits.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from worker.model import RecordingState, TrackedCall
from worker.store import rows

T = TypeVar("T")
P = ParamSpec("P")

# Every REAL column goes through quote(): JSON renders a REAL with 15 significant digits,
# which does not always give back the same float; quote() falls back to 21 digits when 15
# would not round-trip (tests/test_store_jobs.py checks this on the SQLite in use).
_NAMES = rows.CALL_COLUMNS.split(", ")
_CALL_JSON = ", ".join(f"quote({name})" if i in rows.REAL_CALL_POSITIONS else name
                       for i, name in enumerate(_NAMES))

# Calls as one JSON array of rows (``CALL_COLUMNS`` in order, then whether the call has
# recordings): one step, however many calls.
_AS_JSON = (
    f"SELECT json_group_array(json_array({_CALL_JSON}, "
    f"  EXISTS (SELECT 1 FROM recordings r WHERE r.call_pk = c.pk))) FROM ({{rows}}) AS c"
)
# Due and not leased (or its lease ran out): what a claim may take.
_FREE = ("next_poll_at IS NOT NULL AND next_poll_at <= ? "
         "AND (lease_until IS NULL OR lease_until < ?)")
_DUE = _AS_JSON.format(rows=f"SELECT * FROM calls WHERE provider = ? AND {_FREE} "
                            f"ORDER BY next_poll_at LIMIT ?")
_HELD = _AS_JSON.format(rows="SELECT * FROM calls WHERE pk IN (SELECT value FROM json_each(?)) "
                             "AND lease_owner = ? AND lease_until = ?")
_LEASE = ("UPDATE calls SET lease_owner = ?, lease_until = ? "
          f"WHERE pk IN (SELECT value FROM json_each(?)) AND {_FREE}")
# The recordings of the calls whose pks are the JSON array bound to it, each call's in order.
RECORDINGS_OF = (
    f"SELECT {rows.RECORDING_COLUMNS} FROM recordings "
    f"WHERE call_pk IN (SELECT value FROM json_each(?)) "
    f"ORDER BY call_pk, first_seen_at, recording_id"
)

Claimed = tuple[list[list[Any]], list[sqlite3.Row]]


def transaction(db: sqlite3.Connection, work: Callable[Concatenate[sqlite3.Connection, P], T],
                *args: P.args, **kwargs: P.kwargs) -> T:
    """``work`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any error.

    SQLite rolls some failures back by itself (a full disk, an I/O error): a ROLLBACK then
    would fail and hide the real error, so it is sent only while a transaction is open.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work(db, *args, **kwargs)
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def claim_due(db: sqlite3.Connection, provider: str, *, now: float, owner: str, until: float,
              limit: int) -> Claimed:
    """Lease up to ``limit`` due calls of ``provider``: ``read_due``, then ``lease``.

    No transaction around the two: the lease is one UPDATE (atomic alone) that takes only
    the calls still due and free, and the store's lock keeps this process's other
    statements out in between. A nothing-due claim, an idle lane's, is one statement.
    """
    return lease(db, read_due(db, provider, now=now, limit=limit), now=now, owner=owner,
                 until=until)


def read_due(db: sqlite3.Connection, provider: str, *, now: float,
             limit: int) -> list[list[Any]]:
    """The earliest due, unleased calls of ``provider``, as rows of values (REALs as text)."""
    found: str = db.execute(_DUE, (provider, now, now, limit)).fetchone()[0]
    return cast(list[list[Any]], json.loads(found))


def lease(db: sqlite3.Connection, calls: list[list[Any]], *, now: float, owner: str,
          until: float) -> Claimed:
    """Lease ``calls`` (from ``read_due``) where still due and free; the leased calls (as
    rows of values, for ``rows.calls_from_values``) and their recordings.

    Only another process can have leased or rescheduled one of them since they were read.
    Then fewer rows change than were read, and the ones this claim holds are read again by
    its exact lease: none of them can have held ``until`` before (it was free, so any older
    lease of ours had run out, and ``until`` is later than now).
    """
    if not calls:
        return [], []
    pks = json.dumps([call[0] for call in calls])
    if db.execute(_LEASE, (owner, until, pks, now, now)).rowcount != len(calls):
        calls = json.loads(db.execute(_HELD, (pks, owner, until)).fetchone()[0])
    with_recordings = [call[0] for call in calls if call[-1]]
    if not with_recordings:
        return calls, []
    return calls, db.execute(RECORDINGS_OF, (json.dumps(with_recordings),)).fetchall()


def write_decisions(db: sqlite3.Connection, writes: rows.Writes,
                    updates: Sequence[tuple[str, list[Any]]]) -> None:
    """The statements of ``rows.decision_writes`` (``updates``: its ``call_updates``)."""
    for statement, params in updates:
        db.execute(statement, params)
    if writes.recordings:
        db.executemany(rows.RECORDING_UPSERT, writes.recordings)
    if writes.events:
        # A key already in the outbox means this event was emitted before: keep the first.
        db.executemany(rows.EVENT_INSERT, writes.events)


def calls_with_recordings(db: sqlite3.Connection, where: str,
                          params: Sequence[Any]) -> list[TrackedCall]:
    """The calls ``SELECT ... FROM calls {where}`` finds, each with its recordings, as one
    job (two statements): ``get_call`` and ``list_calls``."""
    found = db.execute(f"SELECT {rows.CALL_COLUMNS} FROM calls {where}", params).fetchall()
    if not found:
        return []
    pks = [row[0] for row in found]
    recordings = rows.recordings_by_call(db.execute(RECORDINGS_OF, (json.dumps(pks),)).fetchall())
    return [_readable(row, recordings.get(row[0], ())) for row in found]


UNREADABLE_METADATA = {"callwatch": "metadata too deeply nested to read back"}


def _readable(row: sqlite3.Row, recordings: Sequence[RecordingState]) -> TrackedCall:
    """The call, with a placeholder for metadata that cannot be decoded: such a call is set
    aside at its next claim, and ``status`` must still show it (and every other call)."""
    try:
        return rows.call_from_row(row, recordings)
    except (ValueError, RecursionError):
        values = list(row)
        values[8] = json.dumps(UNREADABLE_METADATA)
        return rows.call_from_row(values, recordings)


def write_probe(db: sqlite3.Connection) -> None:
    """Take the write lock, rewrite page 1 with what it holds and commit: fails with
    SQLITE_READONLY, IOERR (or BUSY, FULL...) when the database refuses writes.

    ``BEGIN IMMEDIATE`` alone succeeds on a read-only file, and a rolled-back change never
    reaches the disk: a file system that turned read-only under an open database (ext4's
    errors=remount-ro after a disk error) only shows on a real write. The commit appends one
    page to the WAL (no fsync under ``synchronous=NORMAL``); the probe runs every few
    seconds, not per request, and the content stays the same.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        db.execute(f"PRAGMA user_version = {version}")
        db.execute("COMMIT")
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")
