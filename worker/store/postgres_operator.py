"""The PostgreSQL side of the operator's features (as ``operator.py`` for SQLite): untrack,
the keyset-paged call list, worker heartbeats, and one event's attempt log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from worker.store import postgres_sql as sql
from worker.store.base import AttemptView, CallCursor, CallPage, Heartbeat
from worker.store.operator import STATE
from worker.store.postgres_db import Connections
from worker.webhooks.base import AttemptLog

_UNTRACK = ("UPDATE calls SET untracked_at = COALESCE(untracked_at, $1), next_poll_at = NULL, "
            "updated_at = $1 WHERE provider = $2 AND call_id = $3")
_BEAT = ("INSERT INTO workers (owner, host, pid, version, started_at, beat_at, progress_at, "
         "last_error, last_error_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
         "ON CONFLICT (owner) DO UPDATE SET beat_at = excluded.beat_at, "
         "progress_at = excluded.progress_at, last_error = excluded.last_error, "
         "last_error_at = excluded.last_error_at, version = excluded.version")
_ATTEMPTS = ("SELECT d.endpoint, d.state, a.attempt, a.started_at, a.latency, a.status_code, "
             "a.error, a.reply FROM events e JOIN deliveries d ON d.event_seq = e.seq "
             "JOIN delivery_attempts a ON a.delivery_pk = d.pk WHERE e.id = $1 "
             "ORDER BY a.started_at, a.pk")

ReadCalls = Callable[..., Awaitable[Any]]


class PostgresOperator:
    """Untrack, list, heartbeats and attempt logs over one PostgreSQL database."""

    def __init__(self, db: Connections, read_calls: ReadCalls) -> None:
        self._db = db
        self._read_calls = read_calls  # PostgresStore._calls: calls with their recordings

    async def untrack(self, provider: str, call_id: str, now: float) -> bool:
        async with self._db.connection() as conn:
            status = await conn.execute(_UNTRACK, now, provider, call_id)
        return int(status.rsplit(" ", 1)[-1]) == 1

    async def list_calls_page(self, *, limit: int, provider: str | None = None,
                              state: str | None = None,
                              after: CallCursor | None = None) -> CallPage:
        where: list[str] = []
        params: list[Any] = []
        if provider is not None:
            params.append(provider)
            where.append(f"provider = ${len(params)}")
        if state is not None:
            params.append(state)
            where.append(f"{STATE} = ${len(params)}")
        if after is not None:
            params += [after.tracked_at, after.pk]
            where.append(f"(tracked_at, pk) < (${len(params) - 1}, ${len(params)})")
        params.append(limit + 1)
        tail = (("WHERE " + " AND ".join(where)) if where else "") + \
            f" ORDER BY tracked_at DESC, pk DESC LIMIT ${len(params)}"
        found = await self._read_calls(tail, *params)
        calls = found[:limit]
        last = calls[-1] if len(found) > limit and calls else None
        following = (CallCursor(tracked_at=last.tracked_at, pk=last.pk)
                     if last is not None and last.pk is not None else None)
        return CallPage(calls=calls, next=following)

    async def beat(self, heartbeat: Heartbeat) -> None:
        h = heartbeat
        async with self._db.connection() as conn:
            await conn.execute(_BEAT, h.owner, h.host, h.pid, h.version, h.started_at,
                               h.beat_at, h.progress_at, h.last_error, h.last_error_at)

    async def remove_heartbeat(self, owner: str) -> None:
        async with self._db.connection() as conn:
            await conn.execute("DELETE FROM workers WHERE owner = $1", owner)

    async def heartbeats(self) -> list[Heartbeat]:
        async with self._db.connection() as conn:
            found = await conn.fetch(
                "SELECT owner, host, pid, version, started_at, beat_at, progress_at, "
                "last_error, last_error_at FROM workers ORDER BY beat_at DESC")
        return [Heartbeat(owner=r[0], host=r[1], pid=r[2], version=r[3], started_at=r[4],
                          beat_at=r[5], progress_at=r[6], last_error=r[7], last_error_at=r[8])
                for r in found]

    async def event_attempts(self, event_id: str) -> list[AttemptView] | None:
        async with self._db.connection() as conn:
            found = await conn.fetch(_ATTEMPTS, event_id)
            if not found and await conn.fetchval(
                    "SELECT 1 FROM events WHERE id = $1", event_id) is None:
                return None
        return [AttemptView(endpoint=r[0], state=r[1], attempt=AttemptLog(
            number=r[2], started_at=r[3], latency=r[4], status=r[5], error=r[6],
            reply=bytes(r[7] or b""))) for r in found]


__all__ = ["PostgresOperator", "sql"]
