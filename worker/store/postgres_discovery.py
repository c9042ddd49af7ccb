"""Discovery's durable state over PostgreSQL: a part of ``PostgresStore`` (migration 0002).

The same row per provider as the SQLite part (``store/discovery.py``): when discovery first
ran, the high-water mark, and a lease so that several workers never sweep one provider at
once. The claim locks the row (``FOR UPDATE``) so two workers racing for it serialise.
"""

from __future__ import annotations

from worker.store.base import DISCOVERY_LEASE, DiscoveryState
from worker.store.planning import dead_owners
from worker.store.postgres_db import Connections


class PostgresDiscovery:
    """Discovery rows in the same database as the calls they lead to."""

    def __init__(self, db: Connections, owner: str) -> None:
        self.db = db
        self.owner = owner

    async def claim_discovery(self, provider: str, now: float,
                              lease: float = DISCOVERY_LEASE) -> DiscoveryState | None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO discovery (provider, first_ran_at, updated_at) VALUES ($1, $2, $2) "
                "ON CONFLICT (provider) DO NOTHING", provider, now)
            held = await conn.fetchval(
                "SELECT lease_owner FROM discovery WHERE provider = $1 FOR UPDATE", provider)
            # A holder killed on this host gives its lease up at once; one elsewhere lets it
            # run out (as calls' leases do).
            dead = dead_owners([held], self.owner) if held else []
            row = await conn.fetchrow(
                "UPDATE discovery SET lease_owner = $1, lease_until = $2, updated_at = $3 "
                "WHERE provider = $4 AND (lease_owner IS NULL OR lease_owner = $1 "
                "OR lease_owner = $5 OR lease_until < $3) RETURNING first_ran_at, mark",
                self.owner, now + lease, now, provider, dead[0] if dead else self.owner)
        if row is None:
            return None
        return DiscoveryState(provider=provider, first_ran_at=row[0], mark=row[1])

    async def advance_discovery(self, provider: str, mark: float | None, now: float,
                                lease: float = DISCOVERY_LEASE) -> bool:
        async with self.db.transaction() as conn:
            status: str = await conn.execute(
                "UPDATE discovery SET mark = GREATEST(COALESCE(mark, $1), COALESCE($1, mark)), "
                "lease_until = $2, updated_at = $3 WHERE provider = $4 AND lease_owner = $5",
                mark, now + lease, now, provider, self.owner)
        return status.endswith(" 1")

    async def release_discovery(self, provider: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE discovery SET lease_owner = NULL, lease_until = NULL "
                "WHERE provider = $1 AND lease_owner = $2", provider, self.owner)

    async def discovery_state(self, provider: str) -> DiscoveryState | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT first_ran_at, mark FROM discovery WHERE provider = $1", provider)
        return None if row is None else DiscoveryState(provider=provider, first_ran_at=row[0],
                                                       mark=row[1])
