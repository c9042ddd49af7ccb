"""Mapping between SQLite rows and the domain's frozen values; no I/O here."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from worker.model import (
    CallStatus,
    PollResult,
    RecordingState,
    RecordingStatus,
    Snapshot,
    Terminal,
    TrackedCall,
)

CALL_COLUMNS = (
    "pk, provider, call_id, status, provider_status, started_at, ended_at, end_reason, "
    "metadata, webhook_url, started_notified, ended_notified, terminal, terminal_reason, "
    "not_found_since, consecutive_failures, tracked_at, last_polled_at, next_poll_at"
)
RECORDING_COLUMNS = (
    "call_pk, recording_id, status, url, url_expires_at, content_type, size, first_seen_at, "
    "reason, archive_path, archive_size, archive_sha256"
)


def call_from_row(row: sqlite3.Row, recordings: Iterable[RecordingState] = ()) -> TrackedCall:
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
        recordings=tuple(recordings),
    )


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


def call_update_params(call: TrackedCall, now: float, result: PollResult | None) -> dict[str, Any]:
    """Named parameters for the UPDATE that persists a call after a decision."""
    return {
        "pk": call.pk,
        "status": str(call.status),
        "provider_status": call.provider_status,
        "started_at": call.started_at,
        "ended_at": call.ended_at,
        "end_reason": call.end_reason,
        "started_notified": int(call.started_notified),
        "ended_notified": int(call.ended_notified),
        "terminal": str(call.terminal) if call.terminal else None,
        "terminal_reason": call.terminal_reason,
        "not_found_since": call.not_found_since,
        "consecutive_failures": call.consecutive_failures,
        "updated_at": now,
        "last_polled_at": call.last_polled_at,
        "next_poll_at": None if call.terminal else call.next_poll_at,
        "last_snapshot": snapshot_json(result) if isinstance(result, Snapshot) else None,
    }


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
    }
    return json.dumps(data, separators=(",", ":"), default=str)
