"""Decisions every store backend makes the same way, as pure functions.

A backend is connections, SQL text and row mapping; whatever is a *decision* lives here, so
SQLite and PostgreSQL cannot drift apart on it: who owns a lease, which endpoints a delivery
claim takes from and how many, what state a new delivery starts in, and how an archive result
settles a call. Each backend calls these inside its own transaction.

One decision stays in SQL on purpose: which delivery of a chain (one call's deliveries to one
endpoint, in event order) is its head, and so may be sent (``PROMOTE_NEXT``, ``RETRY``,
``CLAIM`` and the replay's re-heading in ``deliveries_sql.py`` and
``postgres_deliveries.py``, all built on ``earlier_open``). It is a set-based rule, "no
earlier delivery of the same chain is still open", applied by one correlated ``UPDATE``
per batch of finished deliveries, or per replayed set of calls. Deciding it here would mean
reading every affected chain into Python and
writing the chosen heads back: a second round trip and a read of the chain rows inside the
relay's write transaction, on the hot path of every delivery, to re-state a predicate that
``earlier_open`` already states once. Each backend therefore writes that one predicate in its
own SQL; the contract suite pins that they agree (tests/store/test_queues.py, the
event-order and replay tests, run against every backend).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping

from worker.model import TrackedCall
from worker.reconcile import Archived, ArchiveFailed, Decision, Policy, on_archive
from worker.webhooks.base import DeliveryState, Route


def worker_identity() -> str:
    """``host:pid:nonce`` - lets a restarted daemon see which leases belonged to the dead."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str, host: str) -> bool:
    """True when ``owner`` is a worker on this host whose process no longer runs.

    Another host's worker is never judged dead here: its leases run out by themselves.
    """
    parts = owner.split(":")
    if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return True  # our pid, another nonce: a previous life of this process id
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def dead_owners(owners: list[str], me: str) -> list[str]:
    """The lease owners among ``owners`` that are gone (never ``me``)."""
    host = socket.gethostname()
    return [owner for owner in owners if owner != me and owner_is_dead(owner, host)]


def new_delivery_state(target: Route, disabled: set[str]) -> DeliveryState:
    """The state a delivery starts in: dead if it cannot be sent, disabled if its endpoint
    is (a 410 earlier), else pending."""
    if target.dead_reason is not None:
        return DeliveryState.DEAD
    if target.endpoint in disabled:
        return DeliveryState.DISABLED
    return DeliveryState.PENDING


def plan_delivery_claim(heads: Mapping[str, float | None], now: float, free: Mapping[str, int],
                        default_free: int, limit: int) -> list[tuple[str, int]]:
    """How many to try to claim from each endpoint with due work: earliest due first.

    ``heads``: each endpoint's earliest due head (None: nothing due); ``free``: room left per
    endpoint (else ``default_free``); ``limit``: the most to claim in all.
    """
    plan = []
    for url, due in sorted(heads.items(), key=lambda h: h[1] or 0.0):
        room = min(free.get(url, default_free), limit)
        if due is not None and due <= now and room > 0:
            plan.append((url, room))
            limit -= room
        if limit <= 0:
            break
    return plan


def next_delivery_due(heads: Mapping[str, float | None], free: Mapping[str, int],
                      default_free: int, taken: Mapping[str, int]) -> float | None:
    """The earliest due time among endpoints that still have a free slot."""
    times = [due for url, due in heads.items()
             if due is not None and free.get(url, default_free) - taken.get(url, 0) > 0]
    return min(times, default=None)


def poll_holds(lease_until: float | None, now: float) -> bool:
    """A poll's lease on the call is live: an archive result must wait for it."""
    return lease_until is not None and lease_until >= now


def settle_archive(call: TrackedCall, recording_id: str, outcome: Archived | ArchiveFailed,
                   now: float, policy: Policy) -> Decision | None:
    """The call's new state and events after an archive result; None when nothing is written
    for the call (the recording's own row is settled either way)."""
    decision = on_archive(call, recording_id, outcome, now, policy)
    return decision if decision.events else None
