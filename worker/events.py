"""Event bodies exactly as CONTRACT.md's Events section describes them.

Built from the tracked state at the moment of the event, so a consumer sees the call as it was
when the event happened. Signed URLs are never part of a body: they are short-lived secrets.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from worker.model import Event, EventType, RecordingState, TrackedCall


def rfc3339(ts: float | None) -> str | None:
    """POSIX seconds -> ``2026-11-20T12:00:00.123Z`` (millisecond precision), None stays None."""
    if ts is None:
        return None
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_id(provider: str, call_id: str, key: str) -> str:
    """A stable message id: the same event always gets the same ``webhook-id``.

    Derived from what makes the event unique, so a replay or a re-emission after a crash
    can be deduplicated by consumers.
    """
    digest = hashlib.sha256(f"{provider}\0{call_id}\0{key}".encode()).digest()
    return "msg_" + base64.b32encode(digest[:20]).decode().lower().rstrip("=")


def recording_data(rec: RecordingState) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": rec.id,
        "status": str(rec.status),
        "content_type": rec.content_type,
        "size": rec.size,
    }
    if rec.archive_path is not None:
        data["archive"] = {"path": rec.archive_path, "size": rec.archive_size,
                           "sha256": rec.archive_sha256}
    if rec.reason is not None:
        data["reason"] = rec.reason
    return data


def call_data(call: TrackedCall) -> dict[str, Any]:
    data: dict[str, Any] = {
        "provider": call.provider,
        "call_id": call.call_id,
        "status": str(call.status),
        "provider_status": call.provider_status,
        "started_at": rfc3339(call.started_at),
        "ended_at": rfc3339(call.ended_at),
        "end_reason": call.end_reason,
        "metadata": dict(call.metadata),
        "recordings": [recording_data(r) for r in call.recordings],
    }
    if call.terminal_reason is not None:
        data["reason"] = call.terminal_reason
    return data


def call_event(kind: EventType, call: TrackedCall, now: float) -> Event:
    return Event(type=kind, key=str(kind), occurred_at=now, data=call_data(call))


def recording_event(kind: EventType, call: TrackedCall, rec: RecordingState, now: float) -> Event:
    data = {
        "provider": call.provider,
        "call_id": call.call_id,
        "metadata": dict(call.metadata),
        "recording": recording_data(rec),
    }
    return Event(type=kind, key=f"{kind}:{rec.id}", occurred_at=now, data=data,
                 recording_id=rec.id)


def body(event: Event) -> bytes:
    """The exact bytes sent to consumers: compact JSON, UTF-8, keys in a stable order."""
    envelope = {"type": str(event.type), "timestamp": rfc3339(event.occurred_at),
                "data": event.data}
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
