"""The delivery seam: what the relay and the operator commands ask of the store, in domain words.

``SQLiteStore`` implements it (``store/deliveries.py``); a PostgreSQL store would implement the
same methods. Every method is one transaction, so a crash between any two of them loses
nothing: at worst an attempt is made again (delivery is at least once).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from worker.webhooks.policy import Decision


class DeliveryState(enum.StrEnum):
    """Where one (event, endpoint) delivery is."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
    DISABLED = "disabled"  # its endpoint answered 410; waits for a replay


@dataclass(frozen=True, kw_only=True, slots=True)
class Route:
    """One endpoint an event goes to; ``dead_reason`` when it cannot be sent at all."""

    endpoint: str
    dead_reason: str | None = None


# (event type, the call's --webhook URL or None) -> where the event goes
Router = Callable[[str, str | None], Sequence[Route]]


@dataclass(frozen=True, kw_only=True, slots=True)
class ClaimedDelivery:
    """A leased delivery, with everything needed to sign and send it."""

    pk: int
    event_id: str
    event_type: str
    provider: str
    call_id: str
    endpoint: str
    body: bytes
    attempt: int  # the number this attempt gets: 1 for the first since it was (re)queued
    per_call: bool  # the endpoint is the call's own --webhook URL


@dataclass(frozen=True, kw_only=True, slots=True)
class Claim:
    """What ``claim_due_deliveries`` leased, and when the next one not leased falls due."""

    deliveries: list[ClaimedDelivery]
    next_due_at: float | None


@dataclass(frozen=True, kw_only=True, slots=True)
class AttemptLog:
    """One HTTP attempt as it is kept in the attempts log."""

    number: int
    started_at: float
    latency: float
    status: int | None = None
    error: str | None = None
    reply: bytes = b""  # the first bytes of the answer


@dataclass(frozen=True, kw_only=True, slots=True)
class AttemptResult:
    """A decision about a claimed delivery; ``attempt`` is None when none was made (say, an
    endpoint that is no longer configured)."""

    delivery: ClaimedDelivery
    decision: Decision
    attempt: AttemptLog | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Replayed:
    """What ``replay`` did; ``found`` is False for an event id that is not in the outbox."""

    found: bool
    requeued: int
    enabled: tuple[str, ...] = ()  # endpoints re-enabled because something was replayed to them


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliveryView:
    """One delivery as ``callwatch deliveries`` and ``status`` show it."""

    event_id: str
    event_type: str
    provider: str
    call_id: str
    endpoint: str
    state: DeliveryState
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: float | None
    in_flight: bool
    created_at: float
    finished_at: float | None


@dataclass(frozen=True, kw_only=True, slots=True)
class DisabledEndpoint:
    url: str
    since: float
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliveryCounts:
    """Totals for ``status``: open deliveries by state, the dead, and disabled endpoints."""

    pending: int
    retrying: int  # pending after at least one failed attempt
    disabled: int
    dead: int
    disabled_endpoints: tuple[DisabledEndpoint, ...] = ()


class ListFilter(enum.StrEnum):
    """``callwatch deliveries --failed`` / ``--dead``."""

    FAILED = "failed"  # waiting after a failed attempt, or for a disabled endpoint
    DEAD = "dead"


class DeliveryStore(Protocol):
    """Domain-level persistence of webhook deliveries."""

    async def fan_out(self, route: Router, now: float, limit: int = 500) -> int:
        """Turn up to ``limit`` outbox events after the cursor into deliveries and advance the
        cursor, in one transaction; return how many events were read (0: caught up)."""
        ...

    async def claim_due_deliveries(self, now: float, *, free: Mapping[str, int],
                                   default_free: int, limit: int,
                                   lease_seconds: float) -> Claim:
        """Lease due deliveries, earliest first, at most ``free[endpoint]`` (else
        ``default_free``) per endpoint and ``limit`` in all, skipping any whose call has an
        earlier delivery to the same endpoint still open."""
        ...

    async def record_attempts(self, results: Sequence[AttemptResult], now: float) -> None:
        """Log the attempts and apply the decisions, in one transaction; release the leases."""
        ...

    async def recover_deliveries(self, now: float) -> int:
        """At start: release leases held by relays that are gone; return how many."""
        ...

    async def release_deliveries(self, now: float) -> int:
        """At a clean stop: hand back our leases, so the next start sends those at once."""
        ...

    async def replay(self, now: float, *, event_id: str | None = None, dead: bool = False,
                     since: float | None = None, endpoint: str | None = None) -> Replayed:
        """Queue deliveries again, from attempt 1: every delivered or dead delivery of
        ``event_id``, or (``dead``) every dead or disabled one created since ``since``; only
        to ``endpoint`` if given. A disabled endpoint that gets a replay is enabled again
        (``replay EVENT_ID`` touches one only when ``endpoint`` names it)."""
        ...

    async def list_deliveries(self, *, only: ListFilter | None = None,
                              endpoint: str | None = None,
                              call: tuple[str, str] | None = None,
                              limit: int = 50) -> list[DeliveryView]:
        """Deliveries, newest first (in event order for one ``call``)."""
        ...

    async def delivery_counts(self) -> DeliveryCounts: ...
