"""Discovery's durable state over SQLite: a mixin of ``SQLiteStore`` (migration 0004).

One row per provider holds when discovery first ran (the floor without ``discover_since``),
the high-water mark, and a lease: several workers on one database must not sweep the same
provider at once, so a sweep starts by claiming the row and renews the claim with every mark
it writes. A worker that dies leaves a lease that runs out after ``DISCOVERY_LEASE``.

Written in the store's mixin shape of today; when the store becomes one Protocol with one
implementation per backend, these four methods move as they are.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import aiosqlite

from worker.store.base import NewCall

DISCOVERY_LEASE = 120.0  # seconds; renewed by every advance_discovery


@dataclass(frozen=True, kw_only=True, slots=True)
class DiscoveryState:
    """A provider's discovery row, as the worker holding its lease sees it."""

    provider: str
    first_ran_at: float
    mark: float | None


class DiscoveryStore(Protocol):
    """What discovery and ``callwatch backfill`` need from the store."""

    async def claim_discovery(self, provider: str, now: float,
                              lease: float = DISCOVERY_LEASE) -> DiscoveryState | None:
        """Lease the provider's sweep (creating its row, first run = ``now``); None when
        another worker holds it."""
        ...

    async def advance_discovery(self, provider: str, mark: float | None, now: float,
                                lease: float = DISCOVERY_LEASE) -> bool:
        """Store the mark (never moving it back) and renew the lease; False when lost."""
        ...

    async def release_discovery(self, provider: str) -> None:
        """Give the lease up (the sweep is over)."""
        ...

    async def track_many(self, calls: Sequence[tuple[NewCall, float]]) -> int:
        """Track many calls idempotently in one transaction; return how many were new."""
        ...


class DiscoveryMixin:
    """Discovery rows in the same SQLite file as the calls they lead to."""

    owner: str

    if TYPE_CHECKING:
        def _write(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

        async def _fetchone(self, sql: str, params: Any = ()) -> sqlite3.Row | None: ...

    async def claim_discovery(self, provider: str, now: float,
                              lease: float = DISCOVERY_LEASE) -> DiscoveryState | None:
        async with self._write() as db:
            await db.execute(
                "INSERT INTO discovery (provider, first_ran_at, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (provider) DO NOTHING", (provider, now, now))
            cursor = await db.execute(
                "UPDATE discovery SET lease_owner = ?, lease_until = ?, updated_at = ? "
                "WHERE provider = ? AND (lease_owner IS NULL OR lease_owner = ? "
                "OR lease_until < ?) RETURNING first_ran_at, mark",
                (self.owner, now + lease, now, provider, self.owner, now))
            row = await cursor.fetchone()
        if row is None:
            return None
        return DiscoveryState(provider=provider, first_ran_at=row[0], mark=row[1])

    async def advance_discovery(self, provider: str, mark: float | None, now: float,
                                lease: float = DISCOVERY_LEASE) -> bool:
        async with self._write() as db:
            cursor = await db.execute(
                "UPDATE discovery SET mark = MAX(COALESCE(mark, ?), COALESCE(?, mark)), "
                "lease_until = ?, updated_at = ? WHERE provider = ? AND lease_owner = ?",
                (mark, mark, now + lease, now, provider, self.owner))
            return cursor.rowcount == 1

    async def release_discovery(self, provider: str) -> None:
        async with self._write() as db:
            await db.execute(
                "UPDATE discovery SET lease_owner = NULL, lease_until = NULL "
                "WHERE provider = ? AND lease_owner = ?", (provider, self.owner))

    async def discovery_state(self, provider: str) -> DiscoveryState | None:
        """The provider's row without leasing it (``status``, tests)."""
        row = await self._fetchone(
            "SELECT first_ran_at, mark FROM discovery WHERE provider = ?", (provider,))
        return None if row is None else DiscoveryState(provider=provider, first_ran_at=row[0],
                                                       mark=row[1])
