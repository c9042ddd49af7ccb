"""The SQLite side of the operator's features: untrack, the paged call list, heartbeats,
and the attempt log of one event (``callwatch deliveries show``).

A part of ``SQLiteStore`` (composition, like ``deliveries.py``): it uses only the
connector's public API (``sqlite_db.py``).
"""

from __future__ import annotations

from typing import Any

from worker.store import jobs
from worker.store.base import AttemptView, CallCursor, CallPage, Heartbeat
from worker.store.sqlite_db import SQLiteDatabase
from worker.webhooks.base import AttemptLog

# A call's state as ``counts`` and the list name it: its terminal kind, else untracked, else
# set aside, else its status.
STATE = ("COALESCE(terminal, CASE WHEN untracked_at IS NOT NULL THEN 'untracked' "
         "WHEN set_aside_reason IS NOT NULL THEN 'set_aside' END, status)")

_UNTRACK = ("UPDATE calls SET untracked_at = COALESCE(untracked_at, ?), next_poll_at = NULL, "
            "updated_at = ? WHERE provider = ? AND call_id = ?")
_BEAT = ("INSERT INTO workers (owner, host, pid, version, started_at, beat_at, progress_at, "
         "last_error, last_error_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
         "ON CONFLICT (owner) DO UPDATE SET beat_at = excluded.beat_at, "
         "progress_at = excluded.progress_at, last_error = excluded.last_error, "
         "last_error_at = excluded.last_error_at, version = excluded.version")
_ATTEMPTS = ("SELECT d.endpoint, d.state, a.attempt, a.started_at, a.latency, a.status_code, "
             "a.error, a.reply FROM events e JOIN deliveries d ON d.event_seq = e.seq "
             "JOIN delivery_attempts a ON a.delivery_pk = d.pk WHERE e.id = ? "
             "ORDER BY a.started_at, a.pk")


class SQLiteOperator:
    """Untrack, list, heartbeats and attempt logs over one SQLite database."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def untrack(self, provider: str, call_id: str, now: float) -> bool:
        # The poll lease stays: a poll in flight commits its result, but
        # ``rows._call_update_sql`` keeps next_poll_at NULL for an untracked call.
        async with self._db.transaction() as db:
            cursor = await db.execute(_UNTRACK, (now, now, provider, call_id))
            return cursor.rowcount == 1

    async def list_calls_page(self, *, limit: int, provider: str | None = None,
                              state: str | None = None,
                              after: CallCursor | None = None) -> CallPage:
        where: list[str] = []
        params: list[Any] = []
        if provider is not None:
            where.append("provider = ?")
            params.append(provider)
        if state is not None:
            where.append(f"{STATE} = ?")
            params.append(state)
        if after is not None:
            where.append("(tracked_at < ? OR (tracked_at = ? AND pk < ?))")
            params += [after.tracked_at, after.tracked_at, after.pk]
        sql = ("WHERE " + " AND ".join(where) if where else "") + \
            " ORDER BY tracked_at DESC, pk DESC LIMIT ?"
        found = await self._db.job(jobs.calls_with_recordings, sql, (*params, limit + 1))
        more = len(found) > limit
        calls = found[:limit]
        last = calls[-1] if more and calls else None
        following = (CallCursor(tracked_at=last.tracked_at, pk=last.pk)
                     if last is not None and last.pk is not None else None)
        return CallPage(calls=calls, next=following)

    async def beat(self, heartbeat: Heartbeat) -> None:
        h = heartbeat
        async with self._db.transaction() as db:
            await db.execute(_BEAT, (h.owner, h.host, h.pid, h.version, h.started_at,
                                     h.beat_at, h.progress_at, h.last_error, h.last_error_at))

    async def remove_heartbeat(self, owner: str) -> None:
        async with self._db.transaction() as db:
            await db.execute("DELETE FROM workers WHERE owner = ?", (owner,))

    async def heartbeats(self) -> list[Heartbeat]:
        found = await self._db.fetchall(
            "SELECT owner, host, pid, version, started_at, beat_at, progress_at, last_error, "
            "last_error_at FROM workers ORDER BY beat_at DESC")
        return [Heartbeat(owner=r[0], host=r[1], pid=r[2], version=r[3], started_at=r[4],
                          beat_at=r[5], progress_at=r[6], last_error=r[7], last_error_at=r[8])
                for r in found]

    async def event_attempts(self, event_id: str) -> list[AttemptView] | None:
        found = await self._db.fetchall(_ATTEMPTS, (event_id,))
        if not found and await self._db.fetchone(
                "SELECT 1 FROM events WHERE id = ?", (event_id,)) is None:
            return None
        return [AttemptView(endpoint=r[0], state=r[1], attempt=AttemptLog(
            number=r[2], started_at=r[3], latency=r[4], status=r[5], error=r[6],
            reply=bytes(r[7] or b""))) for r in found]
