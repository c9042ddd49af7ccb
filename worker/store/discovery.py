"""Discovery's durable state over SQLite: a part of ``SQLiteStore`` (migration 0005).

One row per provider holds when discovery first ran (the floor without ``discover_since``),
the high-water mark, and a lease: several workers on one database must not sweep the same
provider at once, so a sweep starts by claiming the row and renews the claim with every mark
it writes. A worker that dies leaves a lease that runs out after ``DISCOVERY_LEASE``, or at
once for a worker on this host whose process is gone.

The contract is ``DiscoveryStore`` in ``store/base.py``; this part uses only the connector's
public API, like ``deliveries.py`` and ``downloads.py``.
"""

from __future__ import annotations

from worker.store.base import DISCOVERY_LEASE, DiscoveryState
from worker.store.planning import dead_owners
from worker.store.sqlite_db import SQLiteDatabase


class SQLiteDiscovery:
    """Discovery rows in the same SQLite file as the calls they lead to."""

    def __init__(self, db: SQLiteDatabase, owner: str) -> None:
        self._db = db
        self.owner = owner

    async def claim_discovery(self, provider: str, now: float,
                              lease: float = DISCOVERY_LEASE) -> DiscoveryState | None:
        async with self._db.transaction() as db:
            await db.execute(
                "INSERT INTO discovery (provider, first_ran_at, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (provider) DO NOTHING", (provider, now, now))
            held = await (await db.execute(
                "SELECT lease_owner FROM discovery WHERE provider = ?", (provider,))).fetchone()
            # A holder that was killed on this host gives its lease up at once, as call
            # leases do at start (``recover``); one elsewhere lets it run out.
            dead = dead_owners([held[0]], self.owner) if held and held[0] else []
            cursor = await db.execute(
                "UPDATE discovery SET lease_owner = ?, lease_until = ?, updated_at = ? "
                "WHERE provider = ? AND (lease_owner IS NULL OR lease_owner = ? "
                "OR lease_owner = ? OR lease_until < ?) RETURNING first_ran_at, mark",
                (self.owner, now + lease, now, provider, self.owner,
                 dead[0] if dead else self.owner, now))
            row = await cursor.fetchone()
        if row is None:
            return None
        return DiscoveryState(provider=provider, first_ran_at=row[0], mark=row[1])

    async def advance_discovery(self, provider: str, mark: float | None, now: float,
                                lease: float = DISCOVERY_LEASE) -> bool:
        async with self._db.transaction() as db:
            cursor = await db.execute(
                "UPDATE discovery SET mark = MAX(COALESCE(mark, ?), COALESCE(?, mark)), "
                "lease_until = ?, updated_at = ? WHERE provider = ? AND lease_owner = ?",
                (mark, mark, now + lease, now, provider, self.owner))
            return cursor.rowcount == 1

    async def release_discovery(self, provider: str) -> None:
        async with self._db.transaction() as db:
            await db.execute(
                "UPDATE discovery SET lease_owner = NULL, lease_until = NULL "
                "WHERE provider = ? AND lease_owner = ?", (provider, self.owner))

    async def discovery_state(self, provider: str) -> DiscoveryState | None:
        """The provider's row without leasing it (``status``, tests)."""
        row = await self._db.fetchone(
            "SELECT first_ran_at, mark FROM discovery WHERE provider = ?", (provider,))
        return None if row is None else DiscoveryState(provider=provider, first_ran_at=row[0],
                                                       mark=row[1])
