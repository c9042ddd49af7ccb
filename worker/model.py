"""Enums and frozen value objects shared by every layer.

Times are POSIX seconds as ``float`` everywhere inside callwatch (cheap to compare, store and
index); they become RFC 3339 only at the edges (event bodies, CLI output).

The flow these types carry is one-directional::

    provider adapter -> PollResult (Snapshot | NotFound | PollFailed)
        -> reconcile(TrackedCall, PollResult, now) -> Decision (new TrackedCall + Events)
        -> store (state + outbox in one transaction)
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class CallStatus(enum.StrEnum):
    """Where the call itself is, normalized across providers."""

    PENDING = "pending"
    LIVE = "live"
    ENDED = "ended"


class RecordingStatus(enum.StrEnum):
    """Where one recording is; the first three come from the provider, the last two from us."""

    PROCESSING = "processing"
    AVAILABLE = "available"
    FAILED = "failed"
    ARCHIVED = "archived"
    ARCHIVE_FAILED = "archive_failed"


class Terminal(enum.StrEnum):
    """How tracking of a call ended; nothing is polled for a call that has one."""

    COMPLETED = "completed"
    TRACKING_FAILED = "tracking_failed"


class EventType(enum.StrEnum):
    """The event types of CONTRACT.md, in the order they can happen for one call."""

    CALL_STARTED = "call.started"
    CALL_ENDED = "call.ended"
    RECORDING_AVAILABLE = "recording.available"
    RECORDING_FAILED = "recording.failed"
    RECORDING_ARCHIVED = "recording.archived"
    RECORDING_ARCHIVE_FAILED = "recording.archive_failed"
    CALL_COMPLETED = "call.completed"
    CALL_TRACKING_FAILED = "call.tracking_failed"


TERMINAL_EVENTS = frozenset({EventType.CALL_COMPLETED, EventType.CALL_TRACKING_FAILED})
RECORDING_EVENTS = frozenset(
    {
        EventType.RECORDING_AVAILABLE,
        EventType.RECORDING_FAILED,
        EventType.RECORDING_ARCHIVED,
        EventType.RECORDING_ARCHIVE_FAILED,
    }
)

# A recording in one of these states will not change any more.
SETTLED_WITHOUT_ARCHIVE = frozenset({RecordingStatus.AVAILABLE, RecordingStatus.FAILED,
                                     RecordingStatus.ARCHIVED, RecordingStatus.ARCHIVE_FAILED})
SETTLED_WITH_ARCHIVE = frozenset({RecordingStatus.FAILED, RecordingStatus.ARCHIVED,
                                  RecordingStatus.ARCHIVE_FAILED})


# --------------------------------------------------------------------------- provider snapshots


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordingSnapshot:
    """One recording as the provider reports it right now.

    ``url`` is used byte for byte (re-encoding a signed query string breaks the signature);
    ``url_expires_at`` is when that link stops working, ``None`` when unknown.
    """

    id: str
    status: RecordingStatus  # PROCESSING, AVAILABLE or FAILED only
    url: str | None = None
    url_expires_at: float | None = None
    content_type: str | None = None
    size: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Snapshot:
    """A call as the provider reports it right now, normalized.

    ``recording_expected`` is the provider's word: ``False`` when it says there is no audio
    (an Ultravox call nobody joined, an Envoy status saying there is none), ``None`` when it
    does not say. ``recording_unlikely`` is only a hint (an Ultravox call with recording
    disabled whose ``/recording`` answers 404: a recording can exist anyway, PROVIDERS.md):
    reconcile keeps checking until ``recording_grace``, less and less often.
    """

    status: CallStatus
    provider_status: str
    started_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    recordings: tuple[RecordingSnapshot, ...] = ()
    recording_expected: bool | None = None
    recording_unlikely: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class NotFound:
    """The provider answered 404 for the call."""


class FailureKind(enum.StrEnum):
    """Why a poll produced no snapshot; drives back-off, never an event by itself."""

    TRANSIENT = "transient"  # 5xx, network error, unparseable reply: retry soon
    RATE_LIMITED = "rate_limited"  # 429/503: wait Retry-After, slow the whole provider
    CONFIG = "config"  # 401/403: our key is wrong; retry slowly, shout in the logs


@dataclass(frozen=True, kw_only=True, slots=True)
class PollFailed:
    """A poll that failed; ``retry_after`` is the provider's own wish in seconds, if any."""

    kind: FailureKind
    message: str
    retry_after: float | None = None


PollResult = Snapshot | NotFound | PollFailed


@dataclass(frozen=True, kw_only=True, slots=True)
class DownloadSource:
    """Where the bytes of one recording can be fetched right now, and how."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    expires_at: float | None = None
    content_type: str | None = None
    size: int | None = None


# --------------------------------------------------------------------------- tracked state


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordingState:
    """What we know and have told about one recording of a tracked call."""

    id: str
    status: RecordingStatus
    url: str | None = None
    url_expires_at: float | None = None
    content_type: str | None = None
    size: int | None = None
    first_seen_at: float = 0.0
    reason: str | None = None  # why it failed, when it did
    archive_path: str | None = None  # relative to archive_dir
    archive_size: int | None = None
    archive_sha256: str | None = None

    def replace(self, **changes: Any) -> RecordingState:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, kw_only=True, slots=True)
class TrackedCall:
    """Everything callwatch remembers about one tracked call, as one immutable value.

    ``started_notified`` and ``ended_notified`` record which call events were emitted, so a
    repeated snapshot never emits them twice; recording events are derived from the
    recordings' status transitions.
    """

    provider: str
    call_id: str
    tracked_at: float
    status: CallStatus = CallStatus.PENDING
    provider_status: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    webhook_url: str | None = None
    recordings: tuple[RecordingState, ...] = ()
    started_notified: bool = False
    ended_notified: bool = False
    terminal: Terminal | None = None
    terminal_reason: str | None = None
    not_found_since: float | None = None
    consecutive_failures: int = 0
    last_polled_at: float | None = None
    next_poll_at: float = 0.0
    pk: int | None = None  # the store's row id, None before the first insert
    set_aside: str | None = None  # why its results cannot be stored: no longer polled
    untracked_at: float | None = None  # when `untrack` stopped it: no longer polled

    def replace(self, **changes: Any) -> TrackedCall:
        """``dataclasses.replace``, without re-running the frozen ``__init__``.

        Every poll copies its call at least once; ``dataclasses.replace`` costs ~12 µs here,
        this ~5 µs. Every field is a plain one (no ``init=False``, no ``__post_init__``), so
        copying the slots gives the same value.
        """
        new = object.__new__(TrackedCall)
        for name in _CALL_FIELDS:
            _set(new, name, changes.pop(name) if name in changes else getattr(self, name))
        if changes:
            raise TypeError(f"TrackedCall has no field {sorted(changes)[0]!r}")
        return new

    def recording(self, recording_id: str) -> RecordingState | None:
        for rec in self.recordings:
            if rec.id == recording_id:
                return rec
        return None


_CALL_FIELDS = tuple(f.name for f in dataclasses.fields(TrackedCall))
_set = object.__setattr__


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """One event to put in the outbox.

    ``key`` is unique per call for each event the contract promises exactly once
    (``call.ended``, ``recording.available:<rec>``...); the store refuses a second event with
    the same key, which makes exactly-once hold even if a decision were replayed.
    """

    type: EventType
    key: str
    occurred_at: float
    data: Mapping[str, Any]
    recording_id: str | None = None
