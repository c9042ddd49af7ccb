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
# Participants read for the call's start and end times; a hostile reply can list 100,000.
MAX_PARTICIPANTS = 1000


class ApifycloudProvider:
    """Adapter for ``https://video.apifycloud.io`` (PROVIDERS.md, "apifycloud video")."""

    name = "apifycloud"

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self._base = config.base_url.rstrip("/")
        self._client = client
        self._max_recordings = config.tracking.max_recordings_per_call
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
                                    log=log,
                                    parse=lambda body: _parse_call(body, log,
                                                                   self._max_recordings))

    async def recording_source(
        self, call_id: str, recording_id: str
    ) -> DownloadSource | NotFound | PollFailed:
        """Poll the call again: that is what hands out a fresh link."""
        snapshot = await self.fetch_call(call_id)
        if not isinstance(snapshot, Snapshot):
            return snapshot
        for recording in snapshot.recordings:
            if recording.id == recording_id and recording.url:
                return DownloadSource(url=recording.url,
                                      headers=self.download_headers(recording.url),
                                      expires_at=recording.url_expires_at,
                                      content_type=recording.content_type, size=recording.size)
        return NotFound()

    def download_headers(self, url: str) -> dict[str, str]:
        """The app's headers for a link on the API itself; none for storage elsewhere."""
        return dict(self._auth) if _http.same_origin(url, self._base) else {}

    def _log(self, call_id: str) -> FilteringBoundLogger:
        # Lazy: bound only when something is logged, which a healthy poll never does.
        log: FilteringBoundLogger = structlog.get_logger(provider=self.name, call_id=call_id)
        return log


def _parse_call(body: dict[str, Any], log: FilteringBoundLogger, max_recordings: int) -> Snapshot:
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
        recordings=_recordings(_fields.items(data, "recordings"), log, max_recordings),
    )


def _participant_times(
    participants: list[Any], log: FilteringBoundLogger
) -> tuple[list[float], list[float]]:
    """Every readable ``joinedAt`` and ``leftAt`` of the first ``MAX_PARTICIPANTS``.

    A malformed participant only loses its times; they are reported in one warning per reply,
    not one each (a reply can list thousands).
    """
    joined: list[float] = []
    left: list[float] = []
    if len(participants) > MAX_PARTICIPANTS:
        log.warning("provider.too_many_participants", listed=len(participants),
                    read=MAX_PARTICIPANTS)
    bad = 0
    for participant in participants[:MAX_PARTICIPANTS]:
        if not isinstance(participant, dict):
            bad += 1
            continue
        if (at := _fields.timestamp(participant, "joinedAt", log)) is not None:
            joined.append(at)
        if (at := _fields.timestamp(participant, "leftAt", log)) is not None:
            left.append(at)
    if bad:
        log.warning("provider.bad_field", field="participants", count=bad,
                    reason="not an object")
    return joined, left


def _recordings(
    entries: list[Any], log: FilteringBoundLogger, limit: int
) -> tuple[RecordingSnapshot, ...]:
    """Each usable entry, in order, stopping at ``limit + 1``: one more than reconcile accepts
    is enough for it to end the call (``too_many_recordings``), and a reply listing 15,000
    recordings then costs a scan of their ids, not 15,000 objects.

    An entry without a string id cannot be tracked and a repeated id is skipped; both are
    reported in one warning per reply (not per entry, and never the entry itself: it may hold
    a signed URL, which is a credential).
    """
    seen: dict[str, RecordingSnapshot] = {}
    no_id = duplicates = 0
    for entry in entries:
        rec_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(rec_id, str) or not rec_id:
            no_id += 1
            continue
        if rec_id in seen:
            duplicates += 1
            continue
        if len(seen) > limit:
            log.warning("provider.too_many_recordings", listed=len(entries), limit=limit)
            break
        seen[rec_id] = _recording(rec_id, entry, log)
    if no_id or duplicates:
        log.warning("provider.bad_recording", without_id=no_id, duplicates=duplicates)
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
