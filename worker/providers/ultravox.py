"""Ultravox: the call object, plus a ``/recording`` endpoint whose status code is the answer.

The call says nothing about its recording, so once a call has ended we ask
``/api/calls/{id}/recording`` without following redirects and without reading a body:

    302/301/307/308 + Location -> available at that signed URL (about five minutes of life)
    200                        -> available at the endpoint itself, which needs our key
    404                        -> not there (yet); with ``recordingEnabled: false`` probably
                                  never, but that is a hint (PROVIDERS.md): reconcile keeps
                                  checking, less and less often, until ``recording_grace``

A call that ended ``unjoined`` has no audio, so we do not ask.
"""

from __future__ import annotations

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
    FailureKind,
    NotFound,
    PollFailed,
    PollResult,
    Snapshot,
)
from worker.providers import _fields, _http
from worker.signed_urls import url_expiry

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# A 200 with one of these is an error page or a status message, not the audio.
_NOT_AUDIO = ("text/", "application/json", "application/xml", "application/problem")


@dataclass(frozen=True, slots=True)
class _Call:
    snapshot: Snapshot
    recording_enabled: bool | None


class UltravoxProvider:
    """Adapter for ``https://api.ultravox.ai`` (PROVIDERS.md, "Ultravox")."""

    name = "ultravox"

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self._base = config.base_url.rstrip("/")
        self._client = client
        self._headers = {"X-API-Key": config.api_key.reveal()} if config.api_key else {}

    @staticmethod
    def validate_call_id(call_id: str) -> str | None:
        """Ultravox call ids are UUIDs (documented)."""
        return _http.check_uuid(call_id)

    async def fetch_call(self, call_id: str) -> PollResult:
        """The call, and for an ended call the state of its recording."""
        if self.validate_call_id(call_id) is not None:
            return NotFound()  # no such id can exist there; asking would only build odd URLs
        log = self._log(call_id)
        headers = {**self._headers, "Accept": "application/json"}
        call = await _http.get_json(self._client, self._call_url(call_id), headers=headers,
                                    log=log, parse=lambda body: _parse_call(body, log))
        if not isinstance(call, _Call):
            return call
        snapshot = call.snapshot
        if snapshot.status is not CallStatus.ENDED:
            return snapshot
        if snapshot.end_reason == "unjoined":
            return replace(snapshot, recording_expected=False)
        return await self._with_recording(call_id, call, log)

    async def _with_recording(
        self, call_id: str, call: _Call, log: FilteringBoundLogger
    ) -> PollResult:
        """Complete an ended call's snapshot with what ``/recording`` says."""
        found = await self._probe_recording(call_id, log)
        if isinstance(found, PollFailed):
            return found
        if isinstance(found, NotFound):
            # Disabled is a hint, not proof (a recording can exist anyway): never "none".
            return replace(call.snapshot, recording_unlikely=call.recording_enabled is False)
        return replace(call.snapshot, recordings=(_fields.available_recording(call_id, found),))

    async def recording_source(
        self, call_id: str, recording_id: str
    ) -> DownloadSource | NotFound | PollFailed:
        """Ask ``/recording`` again: a signed link lives about five minutes."""
        if recording_id != call_id or self.validate_call_id(call_id) is not None:
            return NotFound()
        return await self._probe_recording(call_id, self._log(call_id))

    async def _probe_recording(
        self, call_id: str, log: FilteringBoundLogger
    ) -> DownloadSource | NotFound | PollFailed:
        url = self._call_url(call_id) + "/recording"
        reply = await _http.request(self._client, url, headers=self._headers, log=log)
        if not isinstance(reply, _http.Reply):
            return reply
        if reply.status in _REDIRECTS:
            location = reply.headers.get("location")
            if not location:
                return _http.unparseable(log, "redirect without Location", "/recording", b"",
                                         self._headers)
            target = _http.resolve_location(url, location)
            # The key goes nowhere but the API itself; a signed link carries its own authority.
            headers = self._headers if _http.same_origin(target, self._base) else {}
            return DownloadSource(url=target, headers=dict(headers), expires_at=url_expiry(target))
        if reply.status == 200:
            return _direct_source(url, reply, self._headers, log)
        log.warning("provider.unexpected_status", status=reply.status, path="/recording")
        return PollFailed(kind=FailureKind.TRANSIENT,
                          message=f"unexpected HTTP {reply.status} from the recording endpoint")

    def download_headers(self, url: str) -> dict[str, str]:
        """Our key for a download from the API itself (``/recording`` answering 200 with the
        audio); nothing for a signed link elsewhere, which carries its own authority."""
        return dict(self._headers) if _http.same_origin(url, self._base) else {}

    def _call_url(self, call_id: str) -> str:
        return f"{self._base}/api/calls/{quote(call_id, safe='')}"

    def _log(self, call_id: str) -> FilteringBoundLogger:
        # Lazy: bound only when something is logged, which a healthy poll never does.
        log: FilteringBoundLogger = structlog.get_logger(provider=self.name, call_id=call_id)
        return log


def _direct_source(
    url: str, reply: _http.Reply, headers: dict[str, str], log: FilteringBoundLogger
) -> DownloadSource | PollFailed:
    """The endpoint serves the bytes itself: fetching them needs our key."""
    content_type = reply.headers.get("content-type")
    if content_type and content_type.lower().startswith(_NOT_AUDIO):
        log.warning("provider.unparseable", reason="recording endpoint answered with a document",
                    content_type=_fields.clip(content_type), path="/recording")
        return PollFailed(kind=FailureKind.TRANSIENT,
                          message="the recording endpoint answered 200 with a document, not audio")
    return DownloadSource(url=url, headers=dict(headers), content_type=content_type,
                          size=_http.content_length(reply.headers))


def _parse_call(body: dict[str, Any], log: FilteringBoundLogger) -> _Call:
    """Map the documented call object; ``ended`` being non-null is what "ended" means."""
    ended = body.get("ended")
    joined = body.get("joined")
    end_reason = _fields.typed(body, "endReason", str)
    enabled = body.get("recordingEnabled")
    if enabled is not None and not isinstance(enabled, bool):
        log.warning("provider.bad_field", field="recordingEnabled", value=_fields.clip(enabled))
        enabled = None
    started_at = _fields.timestamp(body, "joined", log)
    if ended is not None:
        snapshot = Snapshot(status=CallStatus.ENDED,
                            provider_status=f"ended:{end_reason}" if end_reason else "ended",
                            started_at=started_at, ended_at=_fields.timestamp(body, "ended", log),
                            end_reason=end_reason)
    elif joined is not None:
        snapshot = Snapshot(status=CallStatus.LIVE, provider_status="joined",
                            started_at=started_at)
    else:
        snapshot = Snapshot(status=CallStatus.PENDING, provider_status="created")
    return _Call(snapshot=snapshot, recording_enabled=enabled)
