"""Envoy (tryenvoy.ai): a call with a free-form status, and a JSON ``/recording`` endpoint.

Only ``SCHEDULED`` and ``COMPLETED`` are documented statuses and ``AVAILABLE`` the only
documented recording status, so both are read through tables of likely values; anything else is
logged (``provider.unknown_status``) and read cautiously. Statuses are compared case-insensitively
with hyphens and spaces read as underscores (``in-progress`` == ``IN_PROGRESS``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
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

_ENDED = frozenset({
    "COMPLETED", "COMPLETE", "FINISHED", "ENDED", "FAILED", "ERROR", "CANCELLED", "CANCELED",
    "NO_ANSWER", "NOT_ANSWERED", "UNANSWERED", "BUSY", "MISSED", "VOICEMAIL", "REJECTED",
    "DECLINED", "ABANDONED", "HUNG_UP", "DISCONNECTED", "TERMINATED", "TIMEOUT", "TIMED_OUT",
    "EXPIRED",
})
_LIVE = frozenset({
    "IN_PROGRESS", "INPROGRESS", "ONGOING", "ACTIVE", "CONNECTED", "ANSWERED", "RINGING",
    "LIVE", "STARTED", "RUNNING",
})
_PENDING = frozenset({
    "SCHEDULED", "QUEUED", "PENDING", "CREATED", "INITIATED", "DIALING", "NEW", "WAITING",
})
_RECORDING_READY = frozenset({"AVAILABLE", "READY"})
_RECORDING_FAILED = frozenset({"FAILED", "ERROR"})
_RECORDING_NONE = frozenset({"NONE", "NOT_RECORDED", "DISABLED", "NO_RECORDING"})
_RECORDING_WAIT = frozenset({"PROCESSING", "PENDING", "IN_PROGRESS", "QUEUED", "UPLOADING"})
_KNOWN = _ENDED | _LIVE | _PENDING
_SEPARATORS = re.compile(r"[\s-]+")


class EnvoyProvider:
    """Adapter for ``https://tryenvoy.ai/api/v1`` (PROVIDERS.md, "Envoy")."""

    name = "envoy"

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self._base = config.base_url.rstrip("/")
        self._client = client
        self._headers: dict[str, str] = {"Accept": "application/json"}
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key.reveal()}"
        if config.organization_id:
            self._headers["X-Organization-ID"] = config.organization_id

    @staticmethod
    def validate_call_id(call_id: str) -> str | None:
        """Ids look like ``call_<uuid>`` (inferred only), so any safe token is accepted."""
        return _http.check_token(call_id)

    async def fetch_call(self, call_id: str) -> PollResult:
        """The call; when it says its recording is available, the recording too."""
        if self.validate_call_id(call_id) is not None:
            return NotFound()  # cannot be an id there, and must not become a URL path
        log = self._log(call_id)
        call = await _http.get_json(self._client, self._call_url(call_id),
                                    headers=self._headers, log=log,
                                    parse=lambda body: _parse_call(body, call_id, log))
        if not isinstance(call, _Call):
            return call
        if not call.recording_ready:
            return call.snapshot
        source = await self._recording(call_id, log)
        if isinstance(source, PollFailed):
            return source
        if isinstance(source, NotFound):  # said available, not served yet: keep waiting
            return call.snapshot
        return replace(call.snapshot, recordings=(_fields.available_recording(call_id, source),))

    async def recording_source(
        self, call_id: str, recording_id: str
    ) -> DownloadSource | NotFound | PollFailed:
        """Ask ``/recording`` again for a link that has not expired."""
        if recording_id != call_id or self.validate_call_id(call_id) is not None:
            return NotFound()
        return await self._recording(call_id, self._log(call_id))

    async def _recording(
        self, call_id: str, log: FilteringBoundLogger
    ) -> DownloadSource | NotFound | PollFailed:
        url = self._call_url(call_id) + "/recording"
        return await _http.get_json(self._client, url, headers=self._headers, log=log,
                                    parse=lambda body: self._parse_recording(body, log))

    def _parse_recording(
        self, body: dict[str, Any], log: FilteringBoundLogger
    ) -> DownloadSource | NotFound:
        """The documented ``/recording`` JSON; no ``url`` yet reads as not there yet."""
        url = _fields.typed(body, "url", str)
        if not url:
            return NotFound()
        expires_at = _fields.timestamp(body, "expires_at", log)
        return DownloadSource(
            url=url,
            headers=self.download_headers(url),
            expires_at=expires_at if expires_at is not None else url_expiry(url),
            content_type=_fields.typed(body, "content_type", str),
            size=_fields.size(body, "file_size_bytes"),
        )

    def download_headers(self, url: str) -> dict[str, str]:
        """Our token goes to the API only; a storage link is authorized by its signature."""
        if not _http.same_origin(url, self._base):
            return {}
        return {k: v for k, v in self._headers.items() if k != "Accept"}

    def _call_url(self, call_id: str) -> str:
        return f"{self._base}/api/v1/calls/{quote(call_id, safe='')}"

    def _log(self, call_id: str) -> FilteringBoundLogger:
        # Lazy: bound only when something is logged, which a healthy poll never does.
        log: FilteringBoundLogger = structlog.get_logger(provider=self.name, call_id=call_id)
        return log


@dataclass(frozen=True, slots=True)
class _Call:
    snapshot: Snapshot
    recording_ready: bool  # the call says AVAILABLE: ``/recording`` has the link


def _parse_call(body: dict[str, Any], call_id: str, log: FilteringBoundLogger) -> _Call:
    """Map the call object; an end time means ended, whatever the status says."""
    raw_status = _fields.typed(body, "status", str)
    status = _normalize(raw_status)
    if status not in _KNOWN:
        log.warning("provider.unknown_status", status=_fields.clip(raw_status))
    if status in _ENDED or body.get("call_end_time") is not None:
        call_status = CallStatus.ENDED
    elif status in _LIVE:
        call_status = CallStatus.LIVE
    else:
        call_status = CallStatus.PENDING
    ended = call_status is CallStatus.ENDED
    snapshot = Snapshot(
        status=call_status,
        provider_status=raw_status or "unknown",
        # A scheduled call's start time is a plan, not a start.
        started_at=None if call_status is CallStatus.PENDING
        else _fields.timestamp(body, "call_start_time", log),
        ended_at=_fields.timestamp(body, "call_end_time", log) if ended else None,
        end_reason=status.lower() if ended and status and status not in _LIVE | _PENDING
        else None,
    )
    return _with_recording_status(snapshot, body, call_id, log)


def _with_recording_status(
    snapshot: Snapshot, body: dict[str, Any], call_id: str, log: FilteringBoundLogger
) -> _Call:
    """Read ``recording_status``; unknown values are waited on like ``PROCESSING``."""
    raw = _fields.typed(body, "recording_status", str)
    status = _normalize(raw)
    if status in _RECORDING_READY:
        return _Call(snapshot=snapshot, recording_ready=True)
    if status in _RECORDING_FAILED:
        failed = RecordingSnapshot(id=call_id, status=RecordingStatus.FAILED)
        snapshot = replace(snapshot, recordings=(failed,))
    elif status in _RECORDING_NONE:
        snapshot = replace(snapshot, recording_expected=False)
    elif status and status not in _RECORDING_WAIT:
        log.warning("provider.unknown_status", field="recording_status", status=_fields.clip(raw))
    return _Call(snapshot=snapshot, recording_ready=False)


def _normalize(status: str | None) -> str:
    return _SEPARATORS.sub("_", status.strip()).upper() if status else ""
