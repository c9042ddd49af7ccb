"""The Store seam: what the rest of callwatch asks of its database, in domain words.

SQL lives only behind this Protocol (``store/sqlite.py``), so a PostgreSQL store can fit the
same methods later. Every write that changes a call's state writes its events in the same
transaction: a crash leaves either both or neither.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from worker.model import PollResult, TrackedCall
from worker.reconcile import Decision


class StoreError(Exception):
    """The database cannot be used (corrupt, locked for too long, disk full...)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class NewCall:
    """A call to start tracking, as ``callwatch track`` (or the API) gives it."""

    provider: str
    call_id: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    webhook_url: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class PollApplied:
    """One poll's decision plus the raw result it came from (kept as the last snapshot)."""

    decision: Decision
    result: PollResult | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class StoredEvent:
    """An event as it sits in the outbox."""

    seq: int
    id: str
    provider: str
    call_id: str
    type: str
    occurred_at: float
    body: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class Counts:
    """Live totals for ``status``, systemd STATUS= lines and metrics."""

    calls_by_state: Mapping[tuple[str, str], int]  # (provider, state) -> n; state includes
    #                                                 terminal kinds "completed"/"tracking_failed"
    events: int
    oldest_due_at: float | None

    @property
    def active(self) -> int:
        return sum(n for (_, state), n in self.calls_by_state.items()
                   if state in ("pending", "live", "ended"))


class Store(Protocol):
    """Domain-level persistence of tracked calls and their outbox."""

    async def track(self, call: NewCall, now: float) -> bool:
        """Start tracking; False (and nothing changed) if the call is already tracked."""
        ...

    async def claim_due_calls(self, provider: str, now: float, limit: int) -> list[TrackedCall]:
        """Lease up to ``limit`` calls of ``provider`` whose next poll is due, earliest first."""
        ...

    async def apply_poll_results(self, items: Sequence[PollApplied], now: float) -> None:
        """Persist new call states and their events in one transaction; release the leases."""
        ...

    async def next_due_at(self, provider: str) -> float | None:
        """When the earliest unleased call of ``provider`` is due, None if none is tracked."""
        ...

    async def make_due(self, provider: str, call_id: str, now: float) -> bool:
        """Poll this call at ``now`` at the latest (a provider said it changed).

        False, and nothing changed, when the call is not tracked or its tracking is done.
        """
        ...

    async def get_call(self, provider: str, call_id: str) -> TrackedCall | None: ...

    async def list_calls(self, *, limit: int, include_terminal: bool) -> list[TrackedCall]: ...

    async def call_events(self, provider: str, call_id: str) -> list[StoredEvent]: ...

    async def events_after(self, seq: int, limit: int) -> list[StoredEvent]:
        """Outbox events in write order, for readers that follow the outbox."""
        ...

    async def counts(self) -> Counts: ...

    async def recover(self) -> int:
        """At start: release leases held by workers that are gone; return how many."""
        ...

    async def close(self) -> None: ...
