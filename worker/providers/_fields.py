"""Reading a provider's JSON fields: strict about shapes, tolerant about times.

A field of the wrong type raises ``UnparseableError`` (``_http.get_json`` turns it into a
logged, transient failure); a time we cannot read is logged and reads as unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from structlog.typing import FilteringBoundLogger

from worker.errors import CallwatchError
from worker.model import DownloadSource, RecordingSnapshot, RecordingStatus
from worker.signed_urls import parse_timestamp

T = TypeVar("T")


class UnparseableError(CallwatchError):
    """The reply does not have the shape the provider documents; the message says where."""


def clip(value: object, limit: int = 80) -> str:
    """A provider value short enough to log or quote in a message."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def typed(obj: Mapping[str, Any], key: str, kind: type[T]) -> T | None:
    """``obj[key]`` when it is a ``kind``; None when absent or null; UnparseableError otherwise."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise UnparseableError(f"{key} is {type(value).__name__}, not {kind.__name__}")
    return value


def items(obj: Mapping[str, Any], key: str) -> list[Any]:
    """A list field; absent or null reads as empty, anything else is UnparseableError."""
    return typed(obj, key, list) or []


def timestamp(obj: Mapping[str, Any], key: str, log: FilteringBoundLogger) -> float | None:
    """A time field, tolerantly: one we cannot read is logged and reads as unknown.

    Times only inform; refusing the whole poll over one would stall a call on a format change.
    """
    value = obj.get(key)
    if value is None:
        return None
    parsed = parse_timestamp(value)
    if parsed is None:
        log.warning("provider.bad_field", field=key, value=clip(value))
    return parsed


def size(obj: Mapping[str, Any], *keys: str) -> int | None:
    """The first of ``keys`` holding a non-negative integer (a byte count), if any."""
    for key in keys:
        value = obj.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def available_recording(recording_id: str, source: DownloadSource) -> RecordingSnapshot:
    """A recording the provider serves right now, described by the link it handed out."""
    return RecordingSnapshot(id=recording_id, status=RecordingStatus.AVAILABLE, url=source.url,
                             url_expires_at=source.expires_at,
                             content_type=source.content_type, size=source.size)
