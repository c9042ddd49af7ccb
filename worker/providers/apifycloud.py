"""apifycloud video: ``{"ok": true, "data": {...}}`` with participants and recordings inline.

Recordings carry their own ids and (expiring, most likely S3 presigned) URLs; a later GET of
the call hands out fresh ones, so that is also how ``recording_source`` refreshes a link.
Recording ids are passed through exactly as given, however odd: making them safe for a file
name is the archiver's job, and changing them here would break matching them up later.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import structlog
from structlog.typing import FilteringBoundLogger

from worker.config import ProviderConfig
from worker.model import (
    CallStatus,
    DownloadSource,
    NotFound,
    PollFailed,
    PollResult,
    RecordingSnapshot,
    RecordingStatus,
    Snapshot,
)
from worker.providers import _fields, _http
from worker.signed_urls import url_expiry

_CALL_STATUSES = {"created": CallStatus.PENDING, "active": CallStatus.LIVE,
                  "ended": CallStatus.ENDED}
_RECORDING_STATUSES = {"processing": RecordingStatus.PROCESSING,
                       "available": RecordingStatus.AVAILABLE,
                       "failed": RecordingStatus.FAILED}
_CONTENT_TYPE_KEYS = ("contentType", "content_type", "mimeType", "mimetype")
_SIZE_KEYS = ("size", "sizeBytes", "fileSize", "fileSizeBytes", "bytes")


class ApifycloudProvider:
    """Adapter for ``https://video.apifycloud.io`` (PROVIDERS.md, "apifycloud video")."""

    name = "apifycloud"

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self._base = config.base_url.rstrip("/")
        self._client = client
        # The call endpoint shows no auth; its siblings take these, so send them when we can.
        self._auth: dict[str, str] = {}
        if config.app_id:
            self._auth["X-App-Id"] = config.app_id
        if config.widget_key:
            self._auth["X-Widget-Key"] = config.widget_key.reveal()

    @staticmethod
    def validate_call_id(call_id: str) -> str | None:
        """apifycloud call ids are UUIDs (documented)."""
        return _http.check_uuid(call_id)

    async def fetch_call(self, call_id: str) -> PollResult:
        """The call with its participants' times and its recordings, in one GET."""
        if self.validate_call_id(call_id) is not None:
            return NotFound()  # no such id can exist there; asking would only build odd URLs
        log = self._log(call_id)
        url = f"{self._base}/api/calls/{quote(call_id, safe='')}"
        return await _http.get_json(self._client, url,
                                    headers={**self._auth, "Accept": "application/json"},
                                    log=log, parse=lambda body: _parse_call(body, log))

    async def recording_source(
        self, call_id: str, recording_id: str
    ) -> DownloadSource | NotFound | PollFailed:
        """Poll the call again: that is what hands out a fresh link."""
        snapshot = await self.fetch_call(call_id)
        if not isinstance(snapshot, Snapshot):
            return snapshot
        for recording in snapshot.recordings:
            if recording.id == recording_id and recording.url:
                on_api = _http.same_origin(recording.url, self._base)
                return DownloadSource(url=recording.url, headers=dict(self._auth) if on_api else {},
                                      expires_at=recording.url_expires_at,
                                      content_type=recording.content_type, size=recording.size)
        return NotFound()

    def _log(self, call_id: str) -> FilteringBoundLogger:
        # Lazy: bound only when something is logged, which a healthy poll never does.
        log: FilteringBoundLogger = structlog.get_logger(provider=self.name, call_id=call_id)
        return log


def _parse_call(body: dict[str, Any], log: FilteringBoundLogger) -> Snapshot:
    """Unwrap the envelope and map ``data``; a reply without ``ok: true`` is not an answer."""
    if body.get("ok") is not True:
        raise _fields.UnparseableError(f"ok is {_fields.clip(body.get('ok'))}, not true")
    data = _fields.typed(body, "data", dict)
    if data is None:
        raise _fields.UnparseableError("data is missing")
    raw_status = _fields.typed(data, "status", str)
    status = _CALL_STATUSES.get((raw_status or "").strip().lower())
    if status is None:
        log.warning("provider.unknown_status", status=_fields.clip(raw_status))
        status = CallStatus.PENDING
    joined, left = _participant_times(_fields.items(data, "participants"), log)
    started_at = _fields.timestamp(data, "startedAt", log)
    if started_at is None and joined:
        started_at = min(joined)
    ended_at = _fields.timestamp(data, "endedAt", log)
    if ended_at is None and left:
        ended_at = max(left)
    return Snapshot(
        status=status,
        provider_status=raw_status or "unknown",
        started_at=started_at if status is not CallStatus.PENDING else None,
        ended_at=ended_at if status is CallStatus.ENDED else None,
        recordings=_recordings(_fields.items(data, "recordings"), log),
    )


def _participant_times(
    participants: list[Any], log: FilteringBoundLogger
) -> tuple[list[float], list[float]]:
    """Every readable ``joinedAt`` and ``leftAt``; a malformed participant only loses its times."""
    joined: list[float] = []
    left: list[float] = []
    for participant in participants:
        if not isinstance(participant, dict):
            log.warning("provider.bad_field", field="participants",
                        value=type(participant).__name__)
            continue
        if (at := _fields.timestamp(participant, "joinedAt", log)) is not None:
            joined.append(at)
        if (at := _fields.timestamp(participant, "leftAt", log)) is not None:
            left.append(at)
    return joined, left


def _recordings(entries: list[Any], log: FilteringBoundLogger) -> tuple[RecordingSnapshot, ...]:
    """Each usable entry, in order; one without a string id cannot be tracked, so it is skipped."""
    seen: dict[str, RecordingSnapshot] = {}
    for entry in entries:
        rec_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(rec_id, str) or not rec_id:
            # Not the entry itself: it may hold a signed URL, which is a credential.
            log.warning("provider.bad_recording", reason="no string id",
                        entry=type(entry).__name__)
            continue
        if rec_id in seen:
            log.warning("provider.bad_recording", reason="duplicate id",
                        recording_id=_fields.clip(rec_id))
            continue
        seen[rec_id] = _recording(rec_id, entry, log)
    return tuple(seen.values())


def _recording(rec_id: str, entry: dict[str, Any], log: FilteringBoundLogger) -> RecordingSnapshot:
    raw_status = entry.get("status")
    status = _RECORDING_STATUSES.get(raw_status.strip().lower()) if isinstance(
        raw_status, str) else None
    if status is None:
        log.warning("provider.unknown_status", field="recording.status",
                    status=_fields.clip(raw_status), recording_id=_fields.clip(rec_id))
        status = RecordingStatus.PROCESSING
    url = entry.get("url")
    if url is not None and not isinstance(url, str):
        log.warning("provider.bad_field", field="recording.url",
                    recording_id=_fields.clip(rec_id))
        url = None
    if status is RecordingStatus.AVAILABLE and not url:
        # Ready but no link to fetch it from: not usable yet, so not "available" to us.
        status = RecordingStatus.PROCESSING
    content_type = next((v for k in _CONTENT_TYPE_KEYS
                         if isinstance(v := entry.get(k), str) and v), None)
    return RecordingSnapshot(
        id=rec_id,
        status=status,
        url=url or None,
        url_expires_at=url_expiry(url) if url else None,
        content_type=content_type,
        size=_fields.size(entry, *_SIZE_KEYS),
    )
