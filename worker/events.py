"""Event bodies exactly as CONTRACT.md's Events section describes them.

Built from the tracked state at the moment of the event, so a consumer sees the call as it was
when the event happened. Signed URLs are never part of a body: they are short-lived secrets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from worker.model import Event, EventType, RecordingState, TrackedCall


def rfc3339(ts: float | None) -> str | None:
    """POSIX seconds -> ``2026-11-20T12:00:00.123Z`` (millisecond precision), None stays None.

    The same text as ``isoformat(timespec="milliseconds")`` with ``Z``, formatted by hand:
    half the cost, and every event body carries one or three of these.
    """
    if ts is None:
        return None
    d = datetime.fromtimestamp(ts, tz=UTC)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031 - the fastest way here
        d.year, d.month, d.day, d.hour, d.minute, d.second, d.microsecond // 1000)


# Ten bits -> two base32 characters (RFC 4648 alphabet, lower case).
_B32_PAIRS = [a + b for a in "abcdefghijklmnopqrstuvwxyz234567"
              for b in "abcdefghijklmnopqrstuvwxyz234567"]


def event_id(provider: str, call_id: str, key: str) -> str:
    """A stable message id: the same event always gets the same ``webhook-id``.

    Derived from what makes the event unique, so a replay or a re-emission after a crash
    can be deduplicated by consumers. ``msg_`` and the first 160 bits of a SHA-256 in
    lower-case base32 (32 characters, no padding), encoded through a table because
    ``base64.b32encode`` is a Python loop (4 µs of the 5 an id took).
    """
    digest = hashlib.sha256(f"{provider}\0{call_id}\0{key}".encode()).digest()
    bits = int.from_bytes(digest[:20], "big")
    return "msg_" + "".join([_B32_PAIRS[(bits >> shift) & 0x3FF]
                             for shift in range(150, -1, -10)])


def archive_url(root: str, path: str) -> str:
    """Where an archived recording is: ``file:///srv/rec/<path>``, ``s3://bucket/prefix/<path>``."""
    return f"{root.rstrip('/')}/{path}"


def recording_data(rec: RecordingState, archive_root: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": rec.id,
        "status": str(rec.status),
        "content_type": rec.content_type,
        "size": rec.size,
    }
    if rec.archive_path is not None:
        data["archive"] = {"path": rec.archive_path, "size": rec.archive_size,
                           "sha256": rec.archive_sha256}
        if archive_root is not None:
            data["archive"]["url"] = archive_url(archive_root, rec.archive_path)
    if rec.reason is not None:
        data["reason"] = rec.reason
    return data


def call_data(call: TrackedCall, archive_root: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "provider": call.provider,
        "call_id": call.call_id,
        "status": str(call.status),
        "provider_status": call.provider_status,
        "started_at": rfc3339(call.started_at),
        "ended_at": rfc3339(call.ended_at),
        "end_reason": call.end_reason,
        "metadata": dict(call.metadata),
        "recordings": [recording_data(r, archive_root) for r in call.recordings],
    }
    if call.terminal_reason is not None:
        data["reason"] = call.terminal_reason
    return data


def call_event(kind: EventType, call: TrackedCall, now: float,
               archive_root: str | None = None) -> Event:
    return Event(type=kind, key=str(kind), occurred_at=now, data=call_data(call, archive_root))


def recording_event(kind: EventType, call: TrackedCall, rec: RecordingState, now: float,
                    archive_root: str | None = None) -> Event:
    data = {
        "provider": call.provider,
        "call_id": call.call_id,
        "metadata": dict(call.metadata),
        "recording": recording_data(rec, archive_root),
    }
    return Event(type=kind, key=f"{kind}:{rec.id}", occurred_at=now, data=data,
                 recording_id=rec.id)


def body(event: Event) -> bytes:
    """The exact bytes sent to consumers: compact JSON, UTF-8, keys in a stable order, and
    never more than ``MAX_BODY`` bytes (see ``trimmed``)."""
    encoded = _encode(event, event.data)
    return encoded if len(encoded) <= MAX_BODY else _encode(event, trimmed(event, event.data))


MAX_BODY = 20_000  # bytes: bodies stay under 20 KB, below any consumer's request size limit
TEXT_CAP = 256  # provider free text kept in a trimmed body
_FREE_TEXT = ("provider_status", "end_reason", "reason", "content_type")


def trimmed(event: Event, data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` cut down until the body fits in ``MAX_BODY``, in this order:

    1. provider free text (``provider_status``, ``end_reason``, ``reason``, ``content_type``)
       is cut to ``TEXT_CAP`` characters;
    2. a call event keeps as many of its ``recordings`` as fit and says how many it left out
       in ``recordings_omitted`` (each recording also has events of its own);
    3. ``metadata`` is replaced by ``{}`` and ``metadata_omitted`` is true;
    4. as a last resort every string is cut to ``TEXT_CAP`` characters.

    Metadata is capped at 16 KiB at ``track`` time, so only calls with hundreds of
    recordings or absurd provider strings ever get here.
    """
    out = _cap_text(dict(data))
    if isinstance(out.get("recording"), Mapping):
        out["recording"] = _cap_text(dict(out["recording"]))
    if isinstance(out.get("recordings"), list):
        out["recordings"] = [_cap_text(dict(r)) if isinstance(r, Mapping) else r
                             for r in out["recordings"]]
        if len(_encode(event, out)) > MAX_BODY:
            out = _fit_recordings(event, out)
    if len(_encode(event, out)) > MAX_BODY:
        out["metadata"], out["metadata_omitted"] = {}, True
    if len(_encode(event, out)) > MAX_BODY:
        out = {key: _cap_strings(item) for key, item in out.items()}
    return out


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # one, not one per body


def _encode(event: Event, data: Mapping[str, Any]) -> bytes:
    envelope = {"type": str(event.type), "timestamp": rfc3339(event.occurred_at), "data": data}
    return _JSON.encode(envelope).encode()


def _cap_text(data: dict[str, Any]) -> dict[str, Any]:
    for key in _FREE_TEXT:
        if isinstance(data.get(key), str) and len(data[key]) > TEXT_CAP:
            data[key] = data[key][:TEXT_CAP]
    return data


def _fit_recordings(event: Event, data: dict[str, Any]) -> dict[str, Any]:
    recordings = data["recordings"]
    out = {**data, "recordings": [], "recordings_omitted": len(recordings)}
    room = MAX_BODY - len(_encode(event, out))
    kept = []
    for rec in recordings:
        size = len(json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode()) + 1
        if size > room:
            break
        kept.append(rec)
        room -= size
    out["recordings"], out["recordings_omitted"] = kept, len(recordings) - len(kept)
    return out


def _cap_strings(value: Any) -> Any:
    if isinstance(value, str):
        return value[:TEXT_CAP]
    if isinstance(value, Mapping):
        return {key: _cap_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_cap_strings(item) for item in value]
    return value
