"""Work that runs on the database thread as one job: several statements, one round trip.

Why: the sqlite3 module releases the GIL around every step of a statement (once per row
fetched or written) and aiosqlite's thread takes it again for every job it picks up and
every result it hands back. While the event loop is busy each retake waits its turn: about
1.3 ms at saturation on the benchmark machine (``docs/benchmarks.md``), against 0.6 ms of
SQLite work for a whole 32-call claim. So the hot paths are built to take few steps: a
claim reads its calls as one aggregated row and writes its leases in one statement, and
a transaction goes to the thread as one job instead of one round trip per statement.

Everything here is plain ``sqlite3`` code, called with the connection on its own thread
(``SQLiteStore._job``); nothing here awaits.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from worker.store import rows

T = TypeVar("T")
P = ParamSpec("P")

# Every REAL column goes through quote(): JSON renders a REAL with 15 significant digits,
# which does not always give back the same float; quote() falls back to 21 digits when 15
# would not round-trip (tests/test_store.py checks this on the SQLite in use).
_NAMES = rows.CALL_COLUMNS.split(", ")
_CALL_JSON = ", ".join(f"quote({name})" if i in rows.REAL_CALL_POSITIONS else name
                       for i, name in enumerate(_NAMES))

# The due calls of one provider as one JSON array of rows (``CALL_COLUMNS`` in order, then
# whether the call has recordings): one step, however many calls.
_DUE = (
    f"SELECT json_group_array(json_array({_CALL_JSON}, "
    f"  EXISTS (SELECT 1 FROM recordings r WHERE r.call_pk = due.pk))) "
    f"FROM (SELECT * FROM calls WHERE provider = ? AND next_poll_at IS NOT NULL "
    f"  AND next_poll_at <= ? AND (lease_until IS NULL OR lease_until < ?) "
    f"  ORDER BY next_poll_at LIMIT ?) AS due"
)
_LEASE = ("UPDATE calls SET lease_owner = ?, lease_until = ? "
          "WHERE pk IN (SELECT json_extract(value, '$[0]') FROM json_each(?))")
_RECORDINGS = (
    f"SELECT {rows.RECORDING_COLUMNS} FROM recordings WHERE call_pk IN ("
    f"  SELECT json_extract(value, '$[0]') FROM json_each(?) "
    f"  WHERE json_extract(value, '$[{len(_NAMES)}]')) "
    f"ORDER BY call_pk, first_seen_at, recording_id"
)


def transaction(db: sqlite3.Connection, work: Callable[Concatenate[sqlite3.Connection, P], T],
                *args: P.args, **kwargs: P.kwargs) -> T:
    """``work`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work(db, *args, **kwargs)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def claim_due(db: sqlite3.Connection, provider: str, *, now: float, owner: str, until: float,
              limit: int) -> tuple[str, list[sqlite3.Row]]:
    """Lease up to ``limit`` due calls of ``provider`` (inside a transaction).

    Returns the calls as the JSON text of ``_DUE`` (parsed by ``rows.calls_from_json`` on
    the event loop's side) and the recordings of those that have any.
    """
    due: str = db.execute(_DUE, (provider, now, now, limit)).fetchone()[0]
    if due == "[]":
        return due, []
    db.execute(_LEASE, (owner, until, due))
    return due, db.execute(_RECORDINGS, (due,)).fetchall()


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
