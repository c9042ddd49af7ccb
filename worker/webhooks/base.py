"""The delivery domain types: what the relay and the operator commands exchange with the store.

The Protocol that persists them is ``worker.store.base.DeliveryStore`` (every backend
implements it there).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
