"""The DeliveryStore seam (``webhooks/base.py``) over PostgreSQL, for ``PostgresStore``.

The same head-of-chain invariant as the SQLite store (``store/deliveries.py``, whose pure
planning functions this reuses): only the open delivery with the lowest event seq of a
(call, endpoint) chain has a ``next_attempt_at``. A claim takes due heads with
``FOR UPDATE SKIP LOCKED`` and sets ``next_attempt_at`` to its lease's expiry, so while one
worker sends a head, no worker can send it or anything behind it: per-(call, endpoint)
order holds across workers, as procrastinate's ``procrastinate_fetch_job`` refuses a job
whose lock already has one in progress. Every transaction that opens or closes a chain
link holds ``CHAINS_LOCK``, so a fan-out never misses a head finished meanwhile.

The store's heartbeat renews a claimed delivery until its result is recorded, but no longer
than the lease the relay asked for (its slowest attempt): one the relay dropped (an attempt
that crashed) runs out then, as on SQLite, and is sent again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import asyncpg
import structlog

from worker.store import postgres_sql as sql
from worker.store.deliveries import CURSOR
from worker.store.planning import (
    new_delivery_state,
    next_delivery_due,
    plan_delivery_claim,
)
from worker.store.postgres_db import Connections
from worker.webhooks.base import (
    AttemptResult,
    Claim,
    ClaimedDelivery,
    DeliveryCounts,
    DeliveryState,
    DeliveryView,
    DisabledEndpoint,
    ListFilter,
    Replayed,
    Route,
    Router,
)
from worker.webhooks.policy import Dead, Delivered, Disabled, Retry

log = structlog.get_logger("worker.store")


def _earlier_open(alias: str) -> str:
    return (f"EXISTS (SELECT 1 FROM deliveries p WHERE p.call_pk = {alias}.call_pk "
            f"AND p.endpoint = {alias}.endpoint AND p.event_seq < {alias}.event_seq "
            f"AND p.finished_at IS NULL)")


_HEADS = ("SELECT endpoint, MIN(next_attempt_at) FROM deliveries WHERE state = 'pending' "
          "AND next_attempt_at IS NOT NULL GROUP BY endpoint")
_CLAIM = (
    "WITH due AS (SELECT q.pk FROM deliveries q WHERE q.endpoint = $3 AND q.state = 'pending'"
    f" AND q.next_attempt_at <= $4 AND NOT {_earlier_open('q')}"
    " ORDER BY q.next_attempt_at LIMIT $5 FOR UPDATE SKIP LOCKED) "
    "UPDATE deliveries AS d SET lease_owner = $1, next_attempt_at = $2 FROM due, events e, "
    "calls c WHERE d.pk = due.pk AND e.seq = d.event_seq AND c.pk = d.call_pk "
    "RETURNING d.pk, e.id, e.type, c.provider, c.call_id, d.endpoint, e.body, "
    "d.schedule_step, c.webhook_url"
)
_NEXT_DUE = ("SELECT MIN(next_attempt_at) FROM deliveries WHERE state = 'pending' "
             "AND next_attempt_at IS NOT NULL AND endpoint = $1")
_SETTLE = ("attempts = attempts + $1, schedule_step = schedule_step + $1, last_status = "
           "COALESCE($3::integer, last_status), last_error = $4, lease_owner = NULL, "
           "updated_at = $2")
_FINISH = (f"UPDATE deliveries SET {_SETTLE}, next_attempt_at = NULL, finished_at = "
           "COALESCE(finished_at, $2), state = CASE WHEN finished_at IS NULL THEN $5 "
           "ELSE state END WHERE pk = $6")
_RETRY = (f"UPDATE deliveries AS d SET {_SETTLE}, next_attempt_at = CASE WHEN d.state <> "
          f"'pending' OR $5::float8 IS NULL OR {_earlier_open('d')} THEN NULL ELSE $5 END "
          "WHERE d.pk = $6")
_PROMOTE_NEXT = (
    "UPDATE deliveries AS d SET next_attempt_at = $1 WHERE d.call_pk = (SELECT call_pk FROM"
    " deliveries WHERE pk = $2) AND d.endpoint = $3 AND d.finished_at IS NULL AND d.state ="
    f" 'pending' AND d.next_attempt_at IS NULL AND NOT {_earlier_open('d')}")
_LOG_ATTEMPT = ("INSERT INTO delivery_attempts (delivery_pk, attempt, started_at, status_code,"
                " latency, error, reply) VALUES ($1, $2, $3, $4, $5, $6, $7)")
_VIEW = (
    "SELECT e.id, e.type, c.provider, c.call_id, d.endpoint, d.state, d.attempts,"
    " d.last_status, d.last_error, d.next_attempt_at, d.lease_owner IS NOT NULL,"
    " d.created_at, d.finished_at FROM deliveries d JOIN events e ON e.seq = d.event_seq"
    " JOIN calls c ON c.pk = d.call_pk "
)


class PostgresDeliveries:
    """Webhook deliveries in the same database (and transactions) as calls and events."""

    def __init__(self, db: Connections, owner: str, lease_seconds: float,
                 on_claim: Callable[[], None]) -> None:
        self.db = db
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.on_claim = on_claim  # the store's heartbeat renews what a claim leases
        # What the relay holds: delivery pk -> until when it may (the claim's time plus the
        # lease it asked for). Renewed while held; left out once recorded or released.
        self._held: dict[int, float] = {}

    def held(self, now: float) -> list[int]:
        """The deliveries to renew at ``now``; forget those the relay should be done with."""
        for pk in [pk for pk, until in self._held.items() if until <= now]:
            del self._held[pk]
        return sorted(self._held)

    async def fan_out(self, route: Router, now: float, limit: int = 500) -> int:
        async with self.db.connection() as conn:
            behind = await conn.fetchval(
                "SELECT (SELECT MAX(seq) FROM events) > COALESCE((SELECT seq FROM "
                "outbox_cursors WHERE name = $1), 0)", CURSOR)
        if not behind:
            return 0
        async with self.db.transaction(sql.CHAINS_LOCK) as conn:
            found = await conn.fetch(
                "SELECT e.seq, e.call_pk, e.type, c.webhook_url FROM events e JOIN calls c "
                "ON c.pk = e.call_pk WHERE e.seq > COALESCE((SELECT seq FROM outbox_cursors "
                "WHERE name = $1), 0) ORDER BY e.seq LIMIT $2", CURSOR, limit)
            if not found:
                return 0
            disabled = {r[0] for r in await conn.fetch("SELECT url FROM endpoints")}
            new = [_delivery_row(event, target, disabled, now)
                   for event in found for target in route(event["type"], event["webhook_url"])]
            if new:
                await conn.executemany(
                    "INSERT INTO deliveries (event_seq, call_pk, endpoint, state, last_error,"
                    " created_at, updated_at, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7,"
                    " $8) ON CONFLICT DO NOTHING", new)
            first, last = found[0]["seq"], found[-1]["seq"]
            await _promote(conn, now, "d.event_seq BETWEEN $2 AND $3", (first, last))
            await conn.execute(
                "INSERT INTO outbox_cursors (name, seq) VALUES ($1, $2) ON CONFLICT (name) "
                "DO UPDATE SET seq = excluded.seq", CURSOR, last)
        return len(found)

    async def claim_due_deliveries(self, now: float, *, free: Mapping[str, int],
                                   default_free: int, limit: int,
                                   lease_seconds: float) -> Claim:
        if limit <= 0:
            return Claim(deliveries=[], next_due_at=None)
        self.on_claim()
        # The relay asks for a lease long enough to outlast its slowest attempt; here the
        # heartbeat renews it until then, so the store's own lease_seconds is enough, and a
        # dead worker's deliveries come back within it.
        held_until = now + lease_seconds
        lease_seconds = min(lease_seconds, self.lease_seconds)
        async with self.db.transaction() as conn:  # all or nothing: see Connections.transaction
            heads: dict[str, float | None] = {r[0]: r[1] for r in await conn.fetch(_HEADS)}
            plan = plan_delivery_claim(heads, now, free, default_free, limit)
            claimed: list[ClaimedDelivery] = []
            taken: dict[str, int] = {}
            for url, room in plan:
                got = await conn.fetch(_CLAIM, self.owner, now + lease_seconds, url, now, room)
                claimed += [_claimed(r) for r in got]
                taken[url] = len(got)
                if taken[url] < room:
                    heads[url] = await conn.fetchval(_NEXT_DUE, url)
        self._held.update((item.pk, held_until) for item in claimed)  # committed: ours now
        return Claim(deliveries=claimed,
                     next_due_at=next_delivery_due(heads, free, default_free, taken))

    async def record_attempts(self, results: Sequence[AttemptResult], now: float) -> None:
        if not results:
            return
        async with self.db.transaction(sql.CHAINS_LOCK) as conn:
            attempts = [(r.delivery.pk, a.number, a.started_at, a.status, a.latency, a.error,
                         a.reply) for r in results if (a := r.attempt) is not None]
            if attempts:
                await conn.executemany(_LOG_ATTEMPT, attempts)
            finished = [r for r in results if isinstance(r.decision, Delivered | Dead)]
            if finished:
                await conn.executemany(_FINISH, [_positional(r, now, "state") for r in finished])
                await conn.executemany(_PROMOTE_NEXT, [(now, r.delivery.pk, r.delivery.endpoint)
                                                       for r in finished])
            retried = [r for r in results if isinstance(r.decision, Retry | Disabled)]
            if retried:
                await conn.executemany(_RETRY, [_positional(r, now, "at") for r in retried])
            for result in results:
                if isinstance(result.decision, Disabled):
                    await _disable(conn, result.delivery.endpoint, result.decision.reason, now)
        for result in results:
            self._held.pop(result.delivery.pk, None)

    async def recover_deliveries(self, now: float) -> int:
        import socket

        from worker.store.sqlite import _owner_is_dead

        host = socket.gethostname()
        async with self.db.connection() as conn:
            owners = [r[0] for r in await conn.fetch(
                "SELECT DISTINCT lease_owner FROM deliveries WHERE lease_owner IS NOT NULL")]
        dead = [o for o in owners if o != self.owner and _owner_is_dead(o, host)]
        released = 0
        async with self.db.transaction(sql.CHAINS_LOCK) as conn:
            for owner in dead:
                released += await _release(conn, now, owner)
            await _promote(conn, now, "TRUE", ())
        if released:
            log.info("store.delivery_leases_recovered", deliveries=released, owners=len(dead))
        return released

    async def release_deliveries(self, now: float) -> int:
        self._held.clear()
        async with self.db.transaction() as conn:
            return await _release(conn, now, self.owner)

    async def replay(self, now: float, *, event_id: str | None = None, dead: bool = False,
                     since: float | None = None, endpoint: str | None = None) -> Replayed:
        where = "d.state IN ('dead', 'disabled')"
        params: list[Any] = [now]
        async with self.db.transaction(sql.CHAINS_LOCK) as conn:
            if event_id is not None:
                seq = await conn.fetchval("SELECT seq FROM events WHERE id = $1", event_id)
                if seq is None:
                    return Replayed(found=False, requeued=0)
                states = "'delivered', 'dead', 'disabled'" if endpoint else "'delivered', 'dead'"
                where, params = f"d.event_seq = $2 AND d.state IN ({states})", [now, seq]
            elif not dead:
                raise ValueError("replay needs an event id or dead=True")
            if since is not None and event_id is None:
                params.append(since)
                where += f" AND d.created_at >= ${len(params)}"
            if endpoint is not None:
                params.append(endpoint)
                where += f" AND d.endpoint = ${len(params)}"
            requeued = await conn.fetch(
                "UPDATE deliveries AS d SET state = 'pending', schedule_step = 0,"
                " next_attempt_at = NULL, finished_at = NULL, lease_owner = NULL,"
                f" updated_at = $1 WHERE {where} RETURNING call_pk, endpoint", *params)
            urls = sorted({r[1] for r in requeued})
            enabled = [r[0] for r in await conn.fetch(
                "DELETE FROM endpoints WHERE url = ANY($1) RETURNING url", urls)]
            waited = await conn.fetch(
                "UPDATE deliveries AS d SET state = 'pending', updated_at = $1"
                " WHERE d.state = 'disabled' AND d.endpoint = ANY($2) RETURNING call_pk",
                now, enabled)
            await _rehead(conn, now, {r[0] for r in requeued} | {r[0] for r in waited})
        return Replayed(found=True, requeued=len(requeued), enabled=tuple(sorted(enabled)))

    async def list_deliveries(self, *, only: ListFilter | None = None,
                              endpoint: str | None = None,
                              call: tuple[str, str] | None = None,
                              limit: int = 50) -> list[DeliveryView]:
        terms: list[str] = []
        params: list[Any] = []
        order = "d.pk DESC"
        if only is ListFilter.DEAD:
            terms.append("d.state = 'dead'")
            order = "d.created_at DESC"
        elif only is ListFilter.FAILED:
            terms.append("(d.state = 'disabled' OR (d.state = 'pending' AND d.attempts > 0))")
        if endpoint is not None:
            params.append(endpoint)
            terms.append(f"d.endpoint = ${len(params)}")
        if call is not None:
            params += list(call)
            terms.append(f"c.provider = ${len(params) - 1} AND c.call_id = ${len(params)}")
            order = "d.event_seq, d.endpoint"
        where = f"WHERE {' AND '.join(terms)} " if terms else ""
        params.append(limit)
        async with self.db.connection() as conn:
            found = await conn.fetch(f"{_VIEW}{where}ORDER BY {order} LIMIT ${len(params)}",
                                     *params)
        return [_view(r) for r in found]

    async def delivery_counts(self) -> DeliveryCounts:
        async with self.db.connection() as conn:
            by_state = {r[0]: (r[1], r[2]) for r in await conn.fetch(
                "SELECT state, COUNT(*), COUNT(*) FILTER (WHERE attempts > 0) FROM deliveries"
                " WHERE finished_at IS NULL GROUP BY state")}
            dead = await conn.fetchval("SELECT COUNT(*) FROM deliveries WHERE state = 'dead'")
            disabled = await conn.fetch(
                "SELECT url, disabled_at, disabled_reason FROM endpoints ORDER BY url")
        pending, retrying = by_state.get(DeliveryState.PENDING, (0, 0))
        return DeliveryCounts(
            pending=pending, retrying=retrying,
            disabled=by_state.get(DeliveryState.DISABLED, (0, 0))[0], dead=int(dead or 0),
            disabled_endpoints=tuple(DisabledEndpoint(url=r[0], since=r[1], reason=r[2])
                                     for r in disabled))


async def _promote(conn: asyncpg.Connection, now: float, scope: str,
                   params: Sequence[Any]) -> None:
    """Make due now every pending delivery in ``scope`` that waits with nothing before it."""
    await conn.execute(
        f"UPDATE deliveries AS d SET next_attempt_at = $1 WHERE {scope} AND d.finished_at IS"
        " NULL AND d.state = 'pending' AND d.next_attempt_at IS NULL"
        f" AND NOT {_earlier_open('d')}", now, *params)


async def _rehead(conn: asyncpg.Connection, now: float, call_pks: Iterable[int]) -> None:
    pks = sorted(call_pks)
    await conn.execute(
        "UPDATE deliveries AS d SET next_attempt_at = NULL WHERE d.call_pk = ANY($1)"
        " AND d.finished_at IS NULL AND d.state = 'pending' AND d.next_attempt_at IS NOT NULL"
        f" AND d.lease_owner IS NULL AND {_earlier_open('d')}", pks)
    await _promote(conn, now, "d.call_pk = ANY($2)", (pks,))


async def _release(conn: asyncpg.Connection, now: float, owner: str) -> int:
    status = await conn.execute(
        "UPDATE deliveries SET lease_owner = NULL, next_attempt_at ="
        " CASE WHEN state = 'pending' THEN $1::float8 END WHERE lease_owner = $2", now, owner)
    return int(status.split()[-1])


async def _disable(conn: asyncpg.Connection, url: str, reason: str, now: float) -> None:
    await conn.execute("INSERT INTO endpoints (url, disabled_at, disabled_reason) VALUES"
                       " ($1, $2, $3) ON CONFLICT (url) DO NOTHING", url, now, reason)
    await conn.execute("UPDATE deliveries SET state = 'disabled', next_attempt_at = NULL"
                       " WHERE endpoint = $1 AND state = 'pending'", url)


def _positional(result: AttemptResult, now: float, fifth: str) -> tuple[Any, ...]:
    """``_SETTLE``'s parameters, then ``fifth``: the new state (``_FINISH``) or the retry
    time (``_RETRY``), then the delivery."""
    decision = result.decision
    values = {
        "state": str(DeliveryState.DELIVERED if isinstance(decision, Delivered)
                     else DeliveryState.DEAD),
        "at": decision.at if isinstance(decision, Retry) else None,
    }
    return (int(result.attempt is not None), now,
            result.attempt.status if result.attempt else None,
            None if isinstance(decision, Delivered) else decision.reason, values[fifth],
            result.delivery.pk)


def _delivery_row(event: asyncpg.Record, target: Route, disabled: set[str],
                  now: float) -> tuple[Any, ...]:
    state = new_delivery_state(target, disabled)
    finished = now if state == DeliveryState.DEAD else None
    return (event["seq"], event["call_pk"], target.endpoint, str(state), target.dead_reason,
            now, now, finished)


def _claimed(row: asyncpg.Record) -> ClaimedDelivery:
    return ClaimedDelivery(pk=row[0], event_id=row[1], event_type=row[2], provider=row[3],
                           call_id=row[4], endpoint=row[5], body=bytes(row[6]),
                           attempt=row[7] + 1, per_call=row[8] == row[5])


def _view(row: asyncpg.Record) -> DeliveryView:
    return DeliveryView(event_id=row[0], event_type=row[1], provider=row[2], call_id=row[3],
                        endpoint=row[4], state=DeliveryState(row[5]), attempts=row[6],
                        last_status=row[7], last_error=row[8], next_attempt_at=row[9],
                        in_flight=bool(row[10]), created_at=row[11], finished_at=row[12])
