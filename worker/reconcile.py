"""PURE decisions: (tracked call, what just happened, now) -> (new state, events).

Nothing here sleeps, reads a clock, touches the network or the database; randomness (jitter)
comes in as an argument. That is what lets the property tests run thousands of random
histories and prove the contract's promises:

* every event is emitted at most once per call (per recording for recording events);
* ``call.completed`` / ``call.tracking_failed`` is the last event and comes at most once;
* nothing changes after it.

Two things can happen to a call: a poll (``on_poll``) or the archiver finishing with one of its
recordings (``on_archive``). Both end in the same completion check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from worker.events import call_event, recording_event
from worker.model import (
    SETTLED_WITH_ARCHIVE,
    SETTLED_WITHOUT_ARCHIVE,
    CallStatus,
    Event,
    EventType,
    FailureKind,
    NotFound,
    PollFailed,
    PollResult,
    RecordingSnapshot,
    RecordingState,
    RecordingStatus,
    Snapshot,
    Terminal,
    TrackedCall,
)

_ORDER = {CallStatus.PENDING: 0, CallStatus.LIVE: 1, CallStatus.ENDED: 2}
# How long to wait between polls of a call whose recordings are all ready at the provider and
# only wait for our own archiver: the archiver drives it on, the poll is only a safety net.
ARCHIVE_WAIT_POLL = 300.0
MAX_BACKOFF = 300.0
JITTER = 0.1  # +-10 % on every interval, so calls tracked together spread out
HINT_BACKOFF = 0.5  # recording probably off: wait half the time waited so far
# How a call.tracking_failed ``reason`` starts when the provider listed too many recordings.
TOO_MANY_RECORDINGS = "too_many_recordings"


class TrackingKnobs(Protocol):
    """The ``[tracking]`` settings reconcile reads (``config.TrackingConfig`` has them).

    A Protocol rather than an import of ``worker.config``: reconcile depends on nothing of
    ours but ``model`` and ``events`` (an import-linter contract in pyproject.toml).
    """

    @property
    def poll_interval(self) -> float: ...
    @property
    def pending_poll_interval(self) -> float: ...
    @property
    def recording_poll_interval(self) -> float: ...
    @property
    def recording_grace(self) -> float: ...
    @property
    def not_found_grace(self) -> float: ...
    @property
    def max_tracking_age(self) -> float: ...
    @property
    def max_recordings_per_call(self) -> int: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class Policy:
    """The knobs reconcile needs: the provider's tracking config and whether we archive."""

    tracking: TrackingKnobs
    archiving: bool
    archive_root: str | None = None  # the target's URL: events' archive.url = root + "/" + path


@dataclass(frozen=True, kw_only=True, slots=True)
class Archived:
    """The archiver stored a recording, verified."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ArchiveFailed:
    """The archiver gave up on a recording."""

    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    """The new state of the call and the events to write with it, in order."""

    call: TrackedCall
    events: tuple[Event, ...] = ()


def on_poll(call: TrackedCall, result: PollResult, now: float, policy: Policy,
            jitter: float = 0.5) -> Decision:
    """Apply one poll's outcome. ``jitter`` in [0, 1) spreads the next poll time."""
    if call.terminal is not None:
        return Decision(call=call)
    events: list[Event] = []
    # last_polled_at is set with the last change (no rule reads it): each replace() of a
    # call costs as much as the rest of a live call's decision.
    match result:
        case Snapshot():
            call = _apply_snapshot(call, result, now, policy, events)
            delay = _interval(call, policy)
            if result.recording_unlikely and call.status == CallStatus.ENDED and (
                    not call.recordings):
                delay = _hint_backoff(call, now, policy)
        case NotFound():
            since = call.not_found_since if call.not_found_since is not None else now
            call = call.replace(not_found_since=since, consecutive_failures=0)
            if now - since >= policy.tracking.not_found_grace:
                return _fail(call, f"not found for {now - since:.0f} s", now, events,
                             policy.archive_root)
            delay = min(_interval(call, policy), policy.tracking.not_found_grace)
        case PollFailed():
            failures = call.consecutive_failures + 1
            call = call.replace(consecutive_failures=failures)
            delay = _backoff(result, failures)
    if call.terminal is None and now - call.tracked_at >= policy.tracking.max_tracking_age:
        return _fail(call, f"still not settled after max_tracking_age "
                           f"({policy.tracking.max_tracking_age:.0f} s)", now, events,
                     policy.archive_root)
    if call.terminal is not None:
        return Decision(call=call.replace(last_polled_at=now), events=tuple(events))
    next_poll_at = now + delay * (1 + JITTER * (2 * jitter - 1))
    return Decision(call=call.replace(last_polled_at=now, next_poll_at=next_poll_at),
                    events=tuple(events))


def on_archive(call: TrackedCall, recording_id: str, outcome: Archived | ArchiveFailed,
               now: float, policy: Policy) -> Decision:
    """Record the archiver's result for one recording; may complete the call."""
    rec = call.recording(recording_id)
    if call.terminal is not None or rec is None or rec.status != RecordingStatus.AVAILABLE:
        return Decision(call=call)  # already settled: exactly once
    events: list[Event] = []
    if isinstance(outcome, Archived):
        rec = rec.replace(status=RecordingStatus.ARCHIVED, archive_path=outcome.path,
                          archive_size=outcome.size, archive_sha256=outcome.sha256)
        kind = EventType.RECORDING_ARCHIVED
    else:
        rec = rec.replace(status=RecordingStatus.ARCHIVE_FAILED, reason=outcome.reason)
        kind = EventType.RECORDING_ARCHIVE_FAILED
    call = _put_recording(call, rec)
    events.append(recording_event(kind, call, rec, now, policy.archive_root))
    call = _maybe_complete(call, None, now, policy, events)
    return Decision(call=call, events=tuple(events))


# --------------------------------------------------------------------------- the rules


def _apply_snapshot(call: TrackedCall, snap: Snapshot, now: float, policy: Policy,
                    events: list[Event]) -> TrackedCall:
    status = snap.status if _ORDER[snap.status] >= _ORDER[call.status] else call.status
    ended_at = call.ended_at
    if status == CallStatus.ENDED and ended_at is None:
        ended_at = snap.ended_at if snap.ended_at is not None else now
    changes = {
        "status": status,
        "provider_status": snap.provider_status,
        "started_at": call.started_at if call.started_at is not None else snap.started_at,
        "ended_at": ended_at,
        "end_reason": call.end_reason if call.end_reason is not None else snap.end_reason,
        "not_found_since": None,
        "consecutive_failures": 0,
    }
    # Most polls of a live call change nothing: no copy then.
    if any(getattr(call, name) != value for name, value in changes.items()):
        call = call.replace(**changes)
    # Once the end is announced, a start reported later is too late to tell: skip it.
    if not call.started_notified and not call.ended_notified and (
        status == CallStatus.LIVE or (status == CallStatus.ENDED and call.started_at is not None)
    ):
        call = call.replace(started_notified=True)
        events.append(call_event(EventType.CALL_STARTED, call, now, policy.archive_root))
    if status == CallStatus.ENDED and not call.ended_notified:
        call = call.replace(ended_notified=True)
        events.append(call_event(EventType.CALL_ENDED, call, now, policy.archive_root))
    if (too_many := _too_many_recordings(call, snap, policy)) is not None:
        call = call.replace(terminal=Terminal.TRACKING_FAILED, terminal_reason=too_many)
        events.append(call_event(EventType.CALL_TRACKING_FAILED, call, now, policy.archive_root))
        return call
    for rec_snap in snap.recordings:
        call = _merge_recording(call, rec_snap, now, events)
    return _maybe_complete(call, snap.recording_expected, now, policy, events)


def _too_many_recordings(call: TrackedCall, snap: Snapshot, policy: Policy) -> str | None:
    """Why the call cannot be tracked further, when it would hold more recordings than allowed.

    Counted before any recording is merged, so a reply listing 15,000 of them costs one
    ``call.tracking_failed`` rather than 15,000 events (adapters stop parsing at the cap + 1).
    """
    limit = policy.tracking.max_recordings_per_call
    if len(snap.recordings) + len(call.recordings) <= limit:
        return None  # the common case: no set built
    ids = {rec.id for rec in call.recordings}
    ids.update(rec.id for rec in snap.recordings)
    if len(ids) <= limit:
        return None
    return (f"{TOO_MANY_RECORDINGS}: the provider lists more than {limit} recordings "
            f"(max_recordings_per_call)")


def _merge_recording(call: TrackedCall, snap: RecordingSnapshot, now: float,
                     events: list[Event]) -> TrackedCall:
    old = call.recording(snap.id)
    if old is None:
        rec = RecordingState(id=snap.id, status=RecordingStatus.PROCESSING, first_seen_at=now)
    elif old.status == RecordingStatus.AVAILABLE and snap.status == RecordingStatus.AVAILABLE:
        # A fresh link for a recording we already announced: keep it, emit nothing.
        return _put_recording(call, old.replace(url=snap.url or old.url,
                                                url_expires_at=snap.url_expires_at,
                                                content_type=snap.content_type or old.content_type,
                                                size=snap.size if snap.size is not None
                                                else old.size))
    elif old.status != RecordingStatus.PROCESSING:
        return call  # settled recordings never move back
    else:
        rec = old
    rec = rec.replace(url=snap.url, url_expires_at=snap.url_expires_at,
                      content_type=snap.content_type or rec.content_type,
                      size=snap.size if snap.size is not None else rec.size)
    if snap.status == RecordingStatus.AVAILABLE:
        rec = rec.replace(status=RecordingStatus.AVAILABLE)
        call = _put_recording(call, rec)
        events.append(recording_event(EventType.RECORDING_AVAILABLE, call, rec, now))
    elif snap.status == RecordingStatus.FAILED:
        rec = rec.replace(status=RecordingStatus.FAILED, reason="the provider reported failure")
        call = _put_recording(call, rec)
        events.append(recording_event(EventType.RECORDING_FAILED, call, rec, now))
    else:
        call = _put_recording(call, rec)
    return call


def _maybe_complete(call: TrackedCall, recording_expected: bool | None, now: float,
                    policy: Policy, events: list[Event]) -> TrackedCall:
    if call.status != CallStatus.ENDED or call.terminal is not None:
        return call
    ended_at = call.ended_at if call.ended_at is not None else now
    grace_over = now >= max(ended_at, call.tracked_at) + policy.tracking.recording_grace
    if grace_over:
        for stuck in call.recordings:
            if stuck.status == RecordingStatus.PROCESSING:
                failed = stuck.replace(status=RecordingStatus.FAILED,
                                       reason="not available within recording_grace")
                call = _put_recording(call, failed)
                events.append(recording_event(EventType.RECORDING_FAILED, call, failed, now))
    settled = SETTLED_WITH_ARCHIVE if policy.archiving else SETTLED_WITHOUT_ARCHIVE
    if call.recordings:
        done = all(rec.status in settled for rec in call.recordings)
    else:
        done = grace_over or recording_expected is False
    if not done:
        return call
    call = call.replace(terminal=Terminal.COMPLETED)
    events.append(call_event(EventType.CALL_COMPLETED, call, now, policy.archive_root))
    return call


def _fail(call: TrackedCall, reason: str, now: float, events: list[Event],
          archive_root: str | None) -> Decision:
    call = call.replace(terminal=Terminal.TRACKING_FAILED, terminal_reason=reason,
                        last_polled_at=now)
    events.append(call_event(EventType.CALL_TRACKING_FAILED, call, now, archive_root))
    return Decision(call=call, events=tuple(events))


def _put_recording(call: TrackedCall, rec: RecordingState) -> TrackedCall:
    if call.recording(rec.id) is None:
        return call.replace(recordings=(*call.recordings, rec))
    return call.replace(recordings=tuple(rec if r.id == rec.id else r for r in call.recordings))


def _interval(call: TrackedCall, policy: Policy) -> float:
    tracking = policy.tracking
    if call.status == CallStatus.PENDING:
        return tracking.pending_poll_interval
    if call.status == CallStatus.LIVE:
        return tracking.poll_interval
    if call.recordings and all(r.status != RecordingStatus.PROCESSING for r in call.recordings):
        # Everything is ready at the provider; only our archiver is still at work.
        return max(ARCHIVE_WAIT_POLL, tracking.recording_poll_interval)
    return tracking.recording_poll_interval


def _hint_backoff(call: TrackedCall, now: float, policy: Policy) -> float:
    """Recording probably off: check again later and later, the last check at the grace's end.

    Half the time waited since the end, at least ``recording_poll_interval`` and at most
    ``ARCHIVE_WAIT_POLL``: about a dozen checks in the default 900 s instead of 180.
    """
    tracking = policy.tracking
    ended_at = call.ended_at if call.ended_at is not None else now
    grace_end = max(ended_at, call.tracked_at) + tracking.recording_grace
    delay = min(max(tracking.recording_poll_interval, HINT_BACKOFF * (now - ended_at)),
                ARCHIVE_WAIT_POLL)
    return min(delay, max(grace_end - now, tracking.recording_poll_interval))


def _backoff(failure: PollFailed, failures: int) -> float:
    """Exponential back-off for failed polls; the provider's Retry-After wins when larger."""
    delay = min(MAX_BACKOFF, 2.0 ** min(failures, 9))
    if failure.kind == FailureKind.CONFIG:
        delay = max(delay, 60.0)
    if failure.retry_after is not None:
        delay = max(delay, failure.retry_after)
    return delay
