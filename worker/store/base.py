"""The store contract: everything the rest of callwatch asks of its database, in domain words.

One contract, any backend. ``Store`` is the whole of it; it is split by consumer so each part
of the daemon names only what it uses:

- ``CallStore``: the scheduler, the API and ``track``/``status`` (calls and their outbox);
- ``DeliveryStore``: the webhook relay and ``deliveries``/``replay``;
- ``DownloadStore``: the archiver;
- ``DiscoveryStore``: discovery of calls from the providers' lists (lease and mark);
- ``RetentionStore``: pruning settled calls, space and row counts (``[retention]``);
- ``StoreLifecycle``: the daemon and the command line (recover, release, schema, health, close).

A backend is opened only through ``worker.store.open_store`` (``store/factory.py``) and is
connections, SQL text and row mapping: decisions both backends share are pure functions
(``store/planning.py``, ``reconcile.py``). Rules every backend keeps, checked for each by the
contract suite (``tests/store/``):

- Every write that changes a call's state writes its events in the same transaction: a crash
  leaves either both or neither; an event key is written at most once (exactly-once events).
- Work is claimed with leases owned by ``owner``: another store object (another worker) never
  claims what a live lease holds, and takes it over once the lease (``lease_seconds``) ran out.
- Deliveries of one call to one endpoint are attempted in event order.
- Driver errors leave a method only as ``StoreError`` subclasses (``store/errors.py``):
  ``TransientStoreError`` (retry later) or ``PermanentStoreError`` (never retry as it is).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from worker.archive.base import ArchiveState, DownloadInfo, DownloadJob, DownloadProgress
from worker.model import DownloadSource, PollResult, TrackedCall
from worker.reconcile import Archived, ArchiveFailed, Decision, Policy
from worker.store.errors import (
    PermanentStoreError,
    StoreError,
    StoreNotFoundError,
    TransientStoreError,
)
from worker.webhooks.base import (
    AttemptLog,
    AttemptResult,
    Claim,
    DeliveryCounts,
    DeliveryView,
    ListFilter,
    Replayed,
    Router,
)

__all__ = ["PermanentStoreError", "StoreError", "StoreNotFoundError", "TransientStoreError"]


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
    #                                                 and "set_aside" (see CallStore.set_aside)
    events: int
    oldest_due_at: float | None

    @property
    def active(self) -> int:
        return sum(n for (_, state), n in self.calls_by_state.items()
                   if state in ("pending", "live", "ended"))


@dataclass(frozen=True, kw_only=True, slots=True)
class StoreHealth:
    """What ``StoreLifecycle.probe`` found: ``ok``, or the ``problem`` in one line."""

    ok: bool
    problem: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class CallCursor:
    """Where a page of ``list_calls_page`` ended: the last call's (tracked_at, pk).

    Keyset pagination: the next page starts strictly after it in (tracked_at, pk)
    descending order, so calls tracked meanwhile never shift or repeat a page.
    """

    tracked_at: float
    pk: int


@dataclass(frozen=True, kw_only=True, slots=True)
class CallPage:
    """One page of tracked calls, newest first; ``next`` is None on the last page."""

    calls: list[TrackedCall]
    next: CallCursor | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Heartbeat:
    """A running worker's row: who it is, since when, and when it last showed life."""

    owner: str
    host: str
    pid: int
    version: str
    started_at: float
    beat_at: float
    progress_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class AttemptView:
    """One logged delivery attempt of an event, with the endpoint it went to."""

    endpoint: str
    state: str  # the delivery's state now
    attempt: AttemptLog


class CallStore(Protocol):
    """Domain-level persistence of tracked calls and their outbox."""

    @property
    def lease_seconds(self) -> float:
        """How long a claim holds; holders renew well within it (``extend_call_leases``)."""
        ...

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

    async def track_many(self, calls: Sequence[tuple[NewCall, float]]) -> int:
        """Track many ``(call, now)`` in one transaction (a bulk import); how many were new."""
        ...

    async def extend_call_leases(self, now: float) -> int:
        """Push back the lease of every call this store holds (polls and results not yet
        committed), so ``lease_seconds`` can be short; return how many."""
        ...

    async def set_aside(self, provider: str, call_id: str, reason: str, now: float) -> bool:
        """Stop polling a call whose results cannot be stored (``reason``), for good.

        Durable: the call is never claimed again, ``counts`` reports it in the state
        ``set_aside``, and it stays so after a restart. False if the call is not tracked.
        """
        ...

    async def untrack(self, provider: str, call_id: str, now: float) -> bool:
        """Stop polling and archiving a call, for good; no event is written.

        Its deliveries already queued still go out; its recordings not yet archived are no
        longer download jobs (archived files stay). The first untrack's ``now`` is kept as
        ``untracked_at``; ``counts`` reports the call in the state ``untracked`` (unless it
        had settled). True when the call is tracked (again on a second untrack).
        """
        ...

    async def list_calls_page(self, *, limit: int, provider: str | None = None,
                              state: str | None = None,
                              after: CallCursor | None = None) -> CallPage:
        """Tracked calls newest first (by tracked_at, then pk), ``limit`` at most, only of
        ``provider`` and in ``state`` (as ``counts`` names states) if given, starting after
        the cursor of the previous page."""
        ...

    async def wait_for_change(self, timeout: float) -> bool:  # noqa: ASYNC109 - a wake-up
        """Return True as soon as another process may have changed due work (tracked a call,
        made one due, wrote events, released leases), False once ``timeout`` has passed.

        PostgreSQL answers through LISTEN/NOTIFY, so a call tracked by any process is polled
        at once; a backend without notifications just waits (the scheduler's idle tick then
        finds the change, within about a second).
        """
        ...


class DeliveryStore(Protocol):
    """Domain-level persistence of webhook deliveries (types: ``webhooks/base.py``).

    Every method is one transaction, so a crash between any two of them loses nothing: at
    worst an attempt is made again (delivery is at least once).
    """

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

    async def event_attempts(self, event_id: str) -> list[AttemptView] | None:
        """Every logged attempt to deliver the event, oldest first; None if no such event."""
        ...

    async def delivery_counts(self) -> DeliveryCounts: ...


class DownloadStore(Protocol):
    """What the archiver asks of the database (types: ``archive/base.py``).

    The download queue is not a table of its own: every ``available`` recording of a call
    that is still tracked *is* a job, so a recording is fetched once however many snapshots
    mention it, and a job cannot outlive or miss its recording.
    """

    @property
    def lease_seconds(self) -> float:
        """How long a claim holds; the archiver renews its leases well within it."""
        ...

    async def claim_due_downloads(self, providers: list[str], now: float,
                                  limit: int) -> list[DownloadJob]:
        """Lease up to ``limit`` due jobs, earliest link expiry first (unknown first)."""
        ...

    async def next_download_due_at(self, providers: list[str]) -> float | None:
        """When the earliest unleased job falls due, None when there is none."""
        ...

    async def record_download_failure(self, job: DownloadJob, *, reason: str, retry_at: float,
                                      counted: bool) -> None:
        """Release the job until ``retry_at``; ``counted`` spends one of its attempts."""
        ...

    async def update_recording_link(self, job: DownloadJob, source: DownloadSource) -> None:
        """Keep a fresh link (never its headers: they can hold our API key)."""
        ...

    async def apply_archive_result(self, job: DownloadJob, outcome: Archived | ArchiveFailed,
                                   now: float, policy: Policy) -> bool:
        """Settle the recording and write its events in one transaction (the decision is
        ``planning.settle_archive``'s).

        False, and nothing changed, while a poll holds the call: try again in a moment.
        """
        ...

    async def extend_download_leases(self, now: float) -> int:
        """Push back the lease of every job this process holds (long downloads)."""
        ...

    async def release_downloads(self) -> int:
        """At stop: hand back jobs this process claimed but did not settle."""
        ...

    async def recover_downloads(self) -> int:
        """At start: release jobs leased by processes that are gone; return how many."""
        ...

    async def set_archive_paused(self, reason: str | None, now: float) -> None:
        """Record that archiving is paused (``reason``) or running again (None)."""
        ...

    async def archive_state(self) -> ArchiveState: ...

    async def download_info(self, provider: str, call_id: str) -> dict[str, DownloadInfo]:
        """Per recording id of the call: attempts and last error of pending downloads, and
        the progress last recorded for one in progress."""
        ...

    async def record_download_progress(
            self, items: Sequence[tuple[DownloadJob, DownloadProgress]]) -> None:
        """Note how far downloads this store holds have got (for ``status`` elsewhere); a
        job whose lease is no longer ours is left alone. One transaction for all."""
        ...


DISCOVERY_LEASE = 120.0  # seconds; renewed by every advance_discovery


@dataclass(frozen=True, kw_only=True, slots=True)
class DiscoveryState:
    """A provider's discovery row: when discovery first ran, and its high-water mark."""

    provider: str
    first_ran_at: float
    mark: float | None  # every call created before it has been listed; None: no sweep yet


class DiscoveryStore(Protocol):
    """Discovery's durable state (``worker/discovery.py``): one leased row per provider."""

    async def claim_discovery(self, provider: str, now: float,
                              lease: float = DISCOVERY_LEASE) -> DiscoveryState | None:
        """Lease the provider's sweep (creating its row, first run = ``now``); None while
        another worker's lease on it is live."""
        ...

    async def advance_discovery(self, provider: str, mark: float | None, now: float,
                                lease: float = DISCOVERY_LEASE) -> bool:
        """Store the mark (never moving it back; None keeps it) and renew the lease; False,
        and nothing changed, when this store no longer holds the lease."""
        ...

    async def release_discovery(self, provider: str) -> None:
        """Give the lease up (the sweep is over)."""
        ...

    async def discovery_state(self, provider: str) -> DiscoveryState | None:
        """The provider's row without leasing it; None before discovery first ran."""
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class PrunedCall:
    """A settled call that retention removed (or, in a dry run, would remove)."""

    provider: str
    call_id: str
    settled_at: float
    position: int  # where a dry run goes on from (``prune_settled(after=...)``)


@dataclass(frozen=True, kw_only=True, slots=True)
class TableStats:
    """How big the database is, for metrics and ``prune``: bytes on disk and rows per table."""

    size_bytes: int  # the database's own size (SQLite: pages x page size, without -wal)
    calls: int
    events: int
    deliveries: int
    attempts: int  # delivery attempts logged


class RetentionStore(Protocol):
    """Retention (``[retention]``, ``callwatch prune``): settled calls are deleted in batches.

    A call settles when its terminal state is written (or it is untracked). It is prunable
    once it settled before the cut-off, none of its deliveries is open (pending, or waiting
    on a disabled endpoint) and every one of its events has been fanned out to deliveries.
    Pruning deletes the call, its recordings' rows, events, deliveries and attempt logs;
    archived recordings (files, objects) are never touched.
    """

    async def prune_settled(self, before: float, *, limit: int, dry_run: bool = False,
                            after: int = 0) -> list[PrunedCall]:
        """Delete up to ``limit`` prunable calls settled before ``before``, in one short
        transaction, and return them. ``dry_run``: delete nothing, return those past
        ``after`` (the last ``position`` seen) so a caller can page through them all."""
        ...

    async def reclaim_space(self) -> int:
        """Give the space freed by pruning back to the file system; pages (or bytes) freed.

        Cheap and incremental (SQLite: ``incremental_vacuum``); 0 where the database does it
        on its own."""
        ...

    async def vacuum(self) -> None:
        """Rewrite the whole database compactly (``prune --vacuum``): slow, holds writes."""
        ...

    async def table_stats(self) -> TableStats:
        """Size and row counts, read beside the writer (for /metrics and ``prune``)."""
        ...


class StoreLifecycle(Protocol):
    """Opening is ``open_store``'s; the rest of a store's life is here."""

    @property
    def owner(self) -> str:
        """``host:pid:nonce``: whose leases are whose (``planning.owner_is_dead``)."""
        ...

    @property
    def location(self) -> str:
        """Where the data lives, fit for logs (a path, or a URL without its password)."""
        ...

    async def recover(self) -> int:
        """At start: release call leases held by workers that are gone; return how many."""
        ...

    async def recount_calls(self) -> int:
        """Check the maintained totals behind ``counts`` against a full count of the calls,
        repair any difference, return how many (provider, state) groups were wrong.

        Slow (it reads every call) but never blocking the writer for long: the daemon runs it
        once, in the background, after start.
        """
        ...

    async def release_leases(self) -> int:
        """At a clean stop: hand back the calls this store claimed but did not finish."""
        ...

    async def schema_version(self) -> int: ...

    async def beat(self, heartbeat: Heartbeat) -> None:
        """Write this worker's heartbeat row (``heartbeat.owner``), replacing the last."""
        ...

    async def remove_heartbeat(self, owner: str) -> None:
        """At a clean stop: the worker is gone, not stale."""
        ...

    async def heartbeats(self) -> list[Heartbeat]:
        """Every worker's heartbeat row, the latest beat first."""
        ...

    async def integrity_check(self) -> str:
        """A full check of the data: ``"ok"`` or what is wrong (``callwatch check``)."""
        ...

    async def probe(self) -> StoreHealth:
        """Can this store still read and write the database it opened? Cheap: for health."""
        ...

    async def close(self) -> None:
        """Release connections; never raises, safe to call twice."""
        ...


class Store(CallStore, DeliveryStore, DownloadStore, DiscoveryStore, RetentionStore,
            StoreLifecycle, Protocol):
    """The whole contract: what ``open_store`` returns."""
