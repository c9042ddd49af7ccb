"""The SQLite backend's ``DeliveryStore`` (``store/base.py``): a part ``SQLiteStore`` holds.

It uses only the connector's public API (``sqlite_db.SQLiteDatabase``); the claim plan and a
new delivery's state are ``store/planning.py``'s decisions, shared with every backend.

One invariant makes both the ordering promise and the claim cheap: only the *head* of a
(call, endpoint) chain, its open delivery with the lowest event seq, has a
``next_attempt_at``; the deliveries behind it wait with NULL and are promoted, in the same
transaction, when the head is delivered or dies. So the due index holds about one row per
chain, and a claim reads only rows it can send. The gate (no earlier open delivery) is
checked in the claim as well, as a second line of defence.

A claimed delivery's ``next_attempt_at`` becomes the lease's expiry: while an attempt is in
flight it is not due, and if the relay dies it falls due again by itself (or at once, when
the next start releases the dead relay's leases).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import aiosqlite
import structlog

from worker.store import deliveries_sql as stmt
from worker.store.planning import (
    dead_owners,
    new_delivery_state,
    next_delivery_due,
    plan_delivery_claim,
)
from worker.store.sqlite_db import SQLiteDatabase
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

CURSOR = "deliveries"


class SQLiteDeliveries:
    """Webhook deliveries in the same SQLite file (and transactions) as calls and events."""

    def __init__(self, db: SQLiteDatabase, owner: str) -> None:
        self._db = db
        self.owner = owner

    # ----------------------------------------------------------------------- fan-out

    async def fan_out(self, route: Router, now: float, limit: int = 500) -> int:
        behind = await self._db.fetchone(
            "SELECT (SELECT MAX(seq) FROM events) >"
            " COALESCE((SELECT seq FROM outbox_cursors WHERE name = ?), 0)", (CURSOR,))
        if behind is None or not behind[0]:
            return 0  # caught up: no write transaction at all
        async with self._db.transaction() as db:
            found = list(await db.execute_fetchall(
                "SELECT e.seq, e.call_pk, e.type, c.webhook_url FROM events e"
                " JOIN calls c ON c.pk = e.call_pk WHERE e.seq > COALESCE("
                " (SELECT seq FROM outbox_cursors WHERE name = ?), 0) ORDER BY e.seq LIMIT ?",
                (CURSOR, limit)))
            if not found:
                return 0
            disabled = {r[0] for r in await db.execute_fetchall("SELECT url FROM endpoints")}
            rows = [_delivery_row(event, target, disabled, now)
                    for event in found for target in route(event["type"], event["webhook_url"])]
            await db.executemany(
                "INSERT OR IGNORE INTO deliveries (event_seq, call_pk, endpoint, state,"
                " last_error, created_at, updated_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows)
            first, last = found[0]["seq"], found[-1]["seq"]
            await _promote(db, now, "d.event_seq BETWEEN ? AND ?", (first, last))
            await db.execute(
                "INSERT INTO outbox_cursors (name, seq) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET seq = excluded.seq", (CURSOR, last))
        return len(found)

    # ----------------------------------------------------------------------- claim

    async def claim_due_deliveries(self, now: float, *, free: Mapping[str, int],
                                   default_free: int, limit: int,
                                   lease_seconds: float) -> Claim:
        if limit <= 0:
            return Claim(deliveries=[], next_due_at=None)
        # Read first, outside a transaction: an idle relay never takes the write lock. The
        # claim re-checks every condition, so a plan gone stale only claims less.
        heads: dict[str, float | None] = {r[0]: r[1] for r in await self._db.fetchall(stmt.HEADS)}
        plan = plan_delivery_claim(heads, now, free, default_free, limit)
        if not plan:
            return Claim(deliveries=[],
                         next_due_at=next_delivery_due(heads, free, default_free, {}))
        claimed: list[ClaimedDelivery] = []
        taken: dict[str, int] = {}
        async with self._db.transaction() as db:
            for url, room in plan:
                rows = list(await db.execute_fetchall(
                    stmt.CLAIM, (self.owner, now + lease_seconds, url, now, room)))
                claimed += [_claimed(row) for row in rows]
                taken[url] = len(rows)
                if taken[url] < room:  # no more due now: when is its next one?
                    found = list(await db.execute_fetchall(stmt.NEXT_DUE, (url,)))
                    heads[url] = found[0][0] if found else None
        return Claim(deliveries=claimed,
                     next_due_at=next_delivery_due(heads, free, default_free, taken))

    # ----------------------------------------------------------------------- results

    async def record_attempts(self, results: Sequence[AttemptResult], now: float) -> None:
        if not results:
            return
        async with self._db.transaction() as db:
            await _apply(db, results, now)

    async def recover_deliveries(self, now: float) -> int:
        owners = await self._db.fetchall("SELECT DISTINCT lease_owner FROM deliveries "
                                         "WHERE lease_owner IS NOT NULL")
        dead = dead_owners([r[0] for r in owners], self.owner)
        released = 0
        async with self._db.transaction() as db:
            for owner in dead:
                released += await _release(db, now, owner)
            # Self-healing: any chain left without a head (nothing should do that) gets one.
            await _promote(db, now, "1", ())
        if released:
            log.info("store.delivery_leases_recovered", deliveries=released, owners=len(dead))
        return released

    async def release_deliveries(self, now: float) -> int:
        async with self._db.transaction() as db:
            return await _release(db, now, self.owner)

    # ----------------------------------------------------------------------- operators

    async def replay(self, now: float, *, event_id: str | None = None, dead: bool = False,
                     since: float | None = None, endpoint: str | None = None) -> Replayed:
        where = "d.state IN ('dead', 'disabled')"
        params: list[Any] = [now]
        async with self._db.transaction() as db:
            if event_id is not None:
                event = list(await db.execute_fetchall("SELECT seq FROM events WHERE id = ?",
                                                       (event_id,)))
                if not event:
                    return Replayed(found=False, requeued=0)
                # A disabled endpoint is re-enabled only when it is named.
                states = "'delivered', 'dead', 'disabled'" if endpoint else "'delivered', 'dead'"
                where, params = f"d.event_seq = ? AND d.state IN ({states})", [now, event[0][0]]
            elif not dead:
                raise ValueError("replay needs an event id or dead=True")
            if since is not None and event_id is None:
                where, params = where + " AND d.created_at >= ?", [*params, since]
            if endpoint is not None:
                where, params = where + " AND d.endpoint = ?", [*params, endpoint]
            requeued = list(await db.execute_fetchall(
                "UPDATE deliveries AS d SET state = 'pending', schedule_step = 0,"
                " next_attempt_at = NULL, finished_at = NULL, lease_owner = NULL,"
                f" updated_at = ? WHERE {where} RETURNING call_pk, endpoint", params))
            urls = sorted({r[1] for r in requeued})
            enabled = [r[0] for r in await db.execute_fetchall(
                "DELETE FROM endpoints WHERE url IN (SELECT value FROM json_each(?))"
                " RETURNING url", (json.dumps(urls),))]
            waited = list(await db.execute_fetchall(
                "UPDATE deliveries AS d SET state = 'pending', updated_at = ?"
                " WHERE d.state = 'disabled' AND d.endpoint IN (SELECT value FROM json_each(?))"
                " RETURNING call_pk", (now, json.dumps(enabled))))
            await _rehead(db, now, {r[0] for r in requeued} | {r[0] for r in waited})
        return Replayed(found=True, requeued=len(requeued), enabled=tuple(sorted(enabled)))

    async def list_deliveries(self, *, only: ListFilter | None = None,
                              endpoint: str | None = None,
                              call: tuple[str, str] | None = None,
                              limit: int = 50) -> list[DeliveryView]:
        terms, params = [], []
        order = "d.pk DESC"
        if only is ListFilter.DEAD:
            terms.append("d.state = 'dead'")
            order = "d.created_at DESC"  # the dead index, not a scan of every delivery
        elif only is ListFilter.FAILED:
            terms.append("(d.state = 'disabled' OR (d.state = 'pending' AND d.attempts > 0))")
        if endpoint is not None:
            terms.append("d.endpoint = ?")
            params.append(endpoint)
        if call is not None:  # through the call's events: the deliveries' event_seq index
            terms.append("d.event_seq IN (SELECT seq FROM events WHERE call_pk ="
                         " (SELECT pk FROM calls WHERE provider = ? AND call_id = ?))")
            params += list(call)
            order = "d.event_seq, d.endpoint"
        where = f"WHERE {' AND '.join(terms)} " if terms else ""
        rows = await self._db.fetchall(f"{stmt.VIEW}{where}ORDER BY {order} LIMIT ?",
                                       (*params, limit))
        return [_view(r) for r in rows]

    async def delivery_counts(self) -> DeliveryCounts:
        open_rows = await self._db.fetchall(
            "SELECT state, COUNT(*), TOTAL(attempts > 0) FROM deliveries"
            " WHERE finished_at IS NULL GROUP BY state")
        by_state = {r[0]: (r[1], int(r[2])) for r in open_rows}
        dead = await self._db.fetchone("SELECT COUNT(*) FROM deliveries WHERE state = 'dead'")
        disabled = await self._db.fetchall(
            "SELECT url, disabled_at, disabled_reason FROM endpoints ORDER BY url")
        pending, retrying = by_state.get(DeliveryState.PENDING, (0, 0))
        return DeliveryCounts(
            pending=pending, retrying=retrying,
            disabled=by_state.get(DeliveryState.DISABLED, (0, 0))[0],
            dead=dead[0] if dead else 0,
            disabled_endpoints=tuple(DisabledEndpoint(url=r[0], since=r[1], reason=r[2])
                                     for r in disabled))


# --------------------------------------------------------------------------- helpers


async def _promote(db: aiosqlite.Connection, now: float, scope: str,
                   params: Sequence[Any]) -> None:
    """Make due now every pending delivery in ``scope`` that waits with nothing before it."""
    await db.execute(
        f"UPDATE deliveries AS d SET next_attempt_at = ? WHERE {scope} AND d.finished_at IS NULL"
        " AND d.state = 'pending' AND d.next_attempt_at IS NULL"
        f" AND NOT {stmt.earlier_open('d')}", (now, *params))


async def _rehead(db: aiosqlite.Connection, now: float, call_pks: Iterable[int]) -> None:
    """Restore the one-head-per-chain invariant for these calls after a replay."""
    scope, pks = "d.call_pk IN (SELECT value FROM json_each(?))", json.dumps(sorted(call_pks))
    await db.execute(
        f"UPDATE deliveries AS d SET next_attempt_at = NULL WHERE {scope}"
        " AND d.finished_at IS NULL AND d.state = 'pending' AND d.next_attempt_at IS NOT NULL"
        f" AND d.lease_owner IS NULL AND {stmt.earlier_open('d')}", (pks,))
    await _promote(db, now, scope, (pks,))


async def _release(db: aiosqlite.Connection, now: float, owner: str) -> int:
    cursor = await db.execute(
        "UPDATE deliveries SET lease_owner = NULL, next_attempt_at ="
        " CASE WHEN state = 'pending' THEN ? END WHERE lease_owner = ?", (now, owner))
    return cursor.rowcount


async def _apply(db: aiosqlite.Connection, results: Sequence[AttemptResult],
                 now: float) -> None:
    """Log the attempts and apply the decisions: a few statements for the whole batch."""
    await _many(db, stmt.LOG_ATTEMPT, [
        (r.delivery.pk, a.number, a.started_at, a.status, a.latency, a.error, a.reply)
        for r in results if (a := r.attempt) is not None])
    finished = [r for r in results if isinstance(r.decision, Delivered | Dead)]
    await _many(db, stmt.FINISH, [_params(r, now) for r in finished])
    await _many(db, stmt.PROMOTE_NEXT,
                [(now, r.delivery.pk, r.delivery.endpoint) for r in finished])
    await _many(db, stmt.RETRY, [_params(r, now) for r in results
                             if isinstance(r.decision, Retry | Disabled)])
    for result in results:
        if isinstance(result.decision, Disabled):
            await _disable(db, result.delivery.endpoint, result.decision.reason, now)


async def _many(db: aiosqlite.Connection, sql: str, rows: Sequence[Any]) -> None:
    """``executemany``, skipping the trip to the database thread when there is nothing."""
    if rows:
        await db.executemany(sql, rows)


def _params(result: AttemptResult, now: float) -> dict[str, Any]:
    decision = result.decision
    return {"made": int(result.attempt is not None), "now": now, "pk": result.delivery.pk,
            "status": result.attempt.status if result.attempt else None,
            "reason": None if isinstance(decision, Delivered) else decision.reason,
            "state": str(DeliveryState.DELIVERED if isinstance(decision, Delivered)
                         else DeliveryState.DEAD),
            "at": decision.at if isinstance(decision, Retry) else None}


async def _disable(db: aiosqlite.Connection, url: str, reason: str, now: float) -> None:
    """410: the endpoint and every open delivery to it wait for a replay."""
    await db.execute(
        "INSERT INTO endpoints (url, disabled_at, disabled_reason) VALUES (?, ?, ?)"
        " ON CONFLICT (url) DO NOTHING", (url, now, reason))
    await db.execute("UPDATE deliveries SET state = 'disabled', next_attempt_at = NULL"
                     " WHERE endpoint = ? AND state = 'pending'", (url,))


def _delivery_row(event: sqlite3.Row, target: Route, disabled: set[str],
                  now: float) -> tuple[Any, ...]:
    state = new_delivery_state(target, disabled)
    finished = now if state == DeliveryState.DEAD else None
    return (event["seq"], event["call_pk"], target.endpoint, str(state), target.dead_reason,
            now, now, finished)


def _claimed(row: sqlite3.Row) -> ClaimedDelivery:
    return ClaimedDelivery(pk=row[0], event_id=row[1], event_type=row[2], provider=row[3],
                           call_id=row[4], endpoint=row[5], body=bytes(row[6]),
                           attempt=row[7] + 1, per_call=row[8] == row[5])


def _view(row: sqlite3.Row) -> DeliveryView:
    return DeliveryView(event_id=row[0], event_type=row[1], provider=row[2], call_id=row[3],
                        endpoint=row[4], state=DeliveryState(row[5]), attempts=row[6],
                        last_status=row[7], last_error=row[8], next_attempt_at=row[9],
                        in_flight=bool(row[10]), created_at=row[11], finished_at=row[12])
