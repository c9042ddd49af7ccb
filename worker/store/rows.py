"""Mapping between SQLite rows and the domain's frozen values; no I/O here."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker.events import body, event_id
from worker.model import (
    CallStatus,
    Event,
    PollResult,
    RecordingState,
    RecordingStatus,
    Snapshot,
    Terminal,
    TrackedCall,
)

if TYPE_CHECKING:
    from worker.store.base import PollApplied

CALL_COLUMNS = (
    "pk, provider, call_id, status, provider_status, started_at, ended_at, end_reason, "
    "metadata, webhook_url, started_notified, ended_notified, terminal, terminal_reason, "
    "not_found_since, consecutive_failures, tracked_at, last_polled_at, next_poll_at, "
    "set_aside_reason, untracked_at"
)
# Where CALL_COLUMNS has its REAL columns (a claim reads them as quote()d text).
REAL_CALL_POSITIONS = frozenset(
    i for i, name in enumerate(CALL_COLUMNS.split(", "))
    if name in {"started_at", "ended_at", "not_found_since", "tracked_at", "last_polled_at",
                "next_poll_at", "untracked_at"})
RECORDING_COLUMNS = (
    "call_pk, recording_id, status, url, url_expires_at, content_type, size, first_seen_at, "
    "reason, archive_path, archive_size, archive_sha256"
)


def call_from_row(row: Sequence[Any], recordings: Iterable[RecordingState] = ()
                  ) -> TrackedCall:
    """A call from a row whose first columns are ``CALL_COLUMNS``, in that order.

    Read by position: a name lookup in ``sqlite3.Row`` is a case-insensitive scan of the
    column names, and a claim converts every row it leases.
    """
    metadata = row[8]
    return TrackedCall(
        pk=row[0],
        provider=row[1],
        call_id=row[2],
        status=CallStatus(row[3]),
        provider_status=row[4],
        started_at=row[5],
        ended_at=row[6],
        end_reason=row[7],
        metadata={} if metadata == "{}" else json.loads(metadata),
        webhook_url=row[9],
        started_notified=bool(row[10]),
        ended_notified=bool(row[11]),
        terminal=Terminal(row[12]) if row[12] else None,
        terminal_reason=row[13],
        not_found_since=row[14],
        consecutive_failures=row[15],
        tracked_at=row[16],
        last_polled_at=row[17],
        next_poll_at=row[18] if row[18] is not None else 0.0,
        set_aside=row[19],
        untracked_at=row[20],
        recordings=tuple(recordings),
    )


def calls_from_values(claimed: Iterable[list[Any]], recording_rows: Iterable[sqlite3.Row],
                      unreadable: list[tuple[str, str, str]] | None = None
                      ) -> list[TrackedCall]:
    """The calls of a claim (``store/jobs.py``), earliest due first: rows of ``CALL_COLUMNS``
    values, each REAL as quote()d text, each row ending with whether the call has
    recordings; and the recordings of those that have some.

    A row that cannot be turned into a call (metadata nested past what the decoder reads)
    is left out and, if ``unreadable`` is given, reported there as (provider, call id, why):
    one bad row must not fail the claim of every other call.
    """
    recordings = recordings_by_call(recording_rows)
    calls = []
    for values in claimed:
        for i in REAL_CALL_POSITIONS:
            value = values[i]
            values[i] = None if value == "NULL" else float(value)
        try:
            calls.append(call_from_row(values, recordings.get(values[0], ())))
        except (ValueError, TypeError, RecursionError) as exc:
            if unreadable is None:
                raise
            unreadable.append((values[1], values[2], repr(exc)[:200]))
    calls.sort(key=lambda c: c.next_poll_at)
    return calls


def recordings_by_call(recording_rows: Iterable[sqlite3.Row]) -> dict[int, list[RecordingState]]:
    """Rows of ``RECORDING_COLUMNS`` grouped by call, each call's in the rows' order."""
    found: dict[int, list[RecordingState]] = {}
    for row in recording_rows:
        found.setdefault(row["call_pk"], []).append(recording_from_row(row))
    return found


def recording_from_row(row: sqlite3.Row) -> RecordingState:
    return RecordingState(
        id=row["recording_id"],
        status=RecordingStatus(row["status"]),
        url=row["url"],
        url_expires_at=row["url_expires_at"],
        content_type=row["content_type"],
        size=row["size"],
        first_seen_at=row["first_seen_at"],
        reason=row["reason"],
        archive_path=row["archive_path"],
        archive_size=row["archive_size"],
        archive_sha256=row["archive_sha256"],
    )


_UPDATED = ("status", "provider_status", "started_at", "ended_at", "end_reason",
            "started_notified", "ended_notified", "terminal", "terminal_reason",
            "not_found_since", "consecutive_failures", "updated_at", "last_polled_at",
            "next_poll_at")
_PARAMS_PER_CALL = len(_UPDATED) + 2  # then last_snapshot, then the row's pk
# The largest UPDATE: 256 x 16 parameters stays well under SQLite's limit of 32 766.
_MOST_ROWS = 256


@functools.cache
def _call_update_sql(count: int) -> str:
    """One UPDATE of ``count`` call rows, their new values in a VALUES list.

    One statement instead of ``executemany``: the sqlite3 module releases and retakes the
    GIL around every step, once per row, and while the event loop is busy each retake
    waited a fraction of a millisecond, so a batch of 48 rows held the database thread for
    tens of milliseconds; one statement is one step. Parameters are bound, not rendered into
    JSON or text, so every float arrives exactly.
    """
    # An untracked call stays unpolled even if a poll that was in flight commits after it.
    sets = ", ".join(f"{name} = CASE WHEN calls.untracked_at IS NULL THEN v.column{i} END"
                     if name == "next_poll_at" else f"{name} = v.column{i}"
                     for i, name in enumerate(_UPDATED, 1))
    row = "(" + ",".join("?" * _PARAMS_PER_CALL) + ")"
    return (f"UPDATE calls SET {sets}, lease_owner = NULL, lease_until = NULL, "
            f"last_snapshot = COALESCE(v.column{len(_UPDATED) + 1}, calls.last_snapshot) "
            f"FROM (VALUES {','.join([row] * count)}) AS v "
            f"WHERE calls.pk = v.column{_PARAMS_PER_CALL}")


def call_updates(params: Sequence[tuple[Any, ...]]) -> list[tuple[str, list[Any]]]:
    """Statements that persist ``params`` (from ``call_update_params``): one per 256 calls.

    A call written twice keeps its last values, as one UPDATE per row in order would. A
    chunk is padded to a power-of-two row count by repeating its last row (the same values
    for the same call: harmless), so at most nine statement texts ever exist and all stay
    in the connection's statement cache.
    """
    last = list({p[-1]: p for p in params}.values())
    statements: list[tuple[str, list[Any]]] = []
    for start in range(0, len(last), _MOST_ROWS):
        chunk = last[start:start + _MOST_ROWS]
        count = 1 << (len(chunk) - 1).bit_length()
        chunk += [chunk[-1]] * (count - len(chunk))
        statements.append((_call_update_sql(count), [value for p in chunk for value in p]))
    return statements


def call_update_params(call: TrackedCall, now: float, result: PollResult | None
                       ) -> tuple[Any, ...]:
    """One call's values for ``call_updates``, which persists calls after decisions."""
    return (
        str(call.status),
        call.provider_status,
        call.started_at,
        call.ended_at,
        call.end_reason,
        int(call.started_notified),
        int(call.ended_notified),
        str(call.terminal) if call.terminal else None,
        call.terminal_reason,
        call.not_found_since,
        call.consecutive_failures,
        now,
        call.last_polled_at,
        None if call.terminal else call.next_poll_at,
        # last_snapshot, then the row
        snapshot_json(result) if isinstance(result, Snapshot) else None,
        call.pk,
    )


RECORDING_UPSERT = (
    f"INSERT INTO recordings ({RECORDING_COLUMNS}) VALUES (:call_pk, "
    ":recording_id, :status, :url, :url_expires_at, :content_type, :size, "
    ":first_seen_at, :reason, :archive_path, :archive_size, :archive_sha256) "
    "ON CONFLICT (call_pk, recording_id) DO UPDATE SET status = excluded.status, "
    "url = excluded.url, url_expires_at = excluded.url_expires_at, "
    "content_type = excluded.content_type, size = excluded.size, "
    "reason = excluded.reason, archive_path = excluded.archive_path, "
    "archive_size = excluded.archive_size, archive_sha256 = excluded.archive_sha256"
)
EVENT_INSERT = ("INSERT INTO events (id, call_pk, type, key, occurred_at, body) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")


# The next due time of one provider's calls that nobody holds.
NEXT_DUE = ("SELECT MIN(next_poll_at) FROM calls WHERE provider = ? "
            "AND next_poll_at IS NOT NULL AND lease_until IS NULL")


@dataclass(frozen=True, slots=True)
class Writes:
    """The parameters of everything one batch of decisions writes, built outside any lock."""

    calls: list[tuple[Any, ...]]  # for call_updates
    recordings: list[dict[str, Any]]  # for RECORDING_UPSERT
    events: list[tuple[Any, ...]]  # for EVENT_INSERT


def decision_writes(decisions: Iterable[tuple[TrackedCall, Sequence[Event], PollResult | None]],
                    now: float) -> Writes:
    """What persisting ``(call, events, poll result)`` decisions writes: the call rows, their
    recordings, and the events with their stable ids and exact bodies."""
    writes = Writes(calls=[], recordings=[], events=[])
    for call, events, result in decisions:
        writes.calls.append(call_update_params(call, now, result))
        if call.pk is not None:
            writes.recordings.extend(recording_params(call.pk, rec) for rec in call.recordings)
        writes.events.extend(
            (event_id(call.provider, call.call_id, event.key), call.pk, str(event.type),
             event.key, event.occurred_at, body(event))
            for event in events)
    return writes


def poll_writes(items: Iterable[PollApplied], now: float) -> Writes:
    """``decision_writes`` for the scheduler's poll results."""
    return decision_writes([(item.decision.call, item.decision.events, item.result)
                            for item in items], now)


def recording_params(call_pk: int, rec: RecordingState) -> dict[str, Any]:
    return {
        "call_pk": call_pk,
        "recording_id": rec.id,
        "status": str(rec.status),
        "url": rec.url,
        "url_expires_at": rec.url_expires_at,
        "content_type": rec.content_type,
        "size": rec.size,
        "first_seen_at": rec.first_seen_at,
        "reason": rec.reason,
        "archive_path": rec.archive_path,
        "archive_size": rec.archive_size,
        "archive_sha256": rec.archive_sha256,
    }


def snapshot_json(snap: Snapshot) -> str:
    """The normalized snapshot, for operators debugging what the provider last said.

    Recording URLs are dropped: they are bearer credentials until they expire. Built by hand
    rather than with ``dataclasses.asdict`` (a deep copy, the costliest step of persisting a
    poll); a test checks it still holds every field.
    """
    data = {
        "status": snap.status,
        "provider_status": snap.provider_status,
        "started_at": snap.started_at,
        "ended_at": snap.ended_at,
        "end_reason": snap.end_reason,
        "recordings": [{"id": rec.id, "status": rec.status, "url_expires_at": rec.url_expires_at,
                        "content_type": rec.content_type, "size": rec.size}
                       for rec in snap.recordings],
        "recording_expected": snap.recording_expected,
        "recording_unlikely": snap.recording_unlikely,
    }
    return json.dumps(data, separators=(",", ":"), default=str)
