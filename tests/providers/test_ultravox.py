"""Ultravox: the call object, and a /recording endpoint whose status code is the answer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from tests.providers.support import API_KEY, UUID_ID, EndlessBody, Routes, load, provider
from worker.model import (
    CallStatus,
    DownloadSource,
    FailureKind,
    NotFound,
    PollFailed,
    RecordingSnapshot,
    RecordingStatus,
    Snapshot,
)
from worker.signed_urls import parse_timestamp

pytestmark = pytest.mark.anyio

BASE = "https://api.ultravox.ai"
CALL = f"/api/calls/{UUID_ID}"
RECORDING = f"{CALL}/recording"
GCS = ("https://storage.googleapis.com/ultravox-recordings/3f2b8a1e.wav"
       "?X-Goog-Algorithm=GOOG4-RSA-SHA256"
       "&X-Goog-Credential=rec%40ultravox.iam.gserviceaccount.com%2F20261120%2Fauto%2Fstorage"
       "%2Fgoog4_request&X-Goog-Date=20261120T120400Z&X-Goog-Expires=300"
       "&X-Goog-SignedHeaders=host&X-Goog-Signature=8f3a%2B0b")


def ts(text: str) -> float:
    value = parse_timestamp(text)
    assert value is not None
    return value


def call(name: str = "ultravox_call_ended", **changes: Any) -> httpx.Response:
    return httpx.Response(200, json={**load(name), **changes})


def redirect(location: str = GCS) -> httpx.Response:
    return httpx.Response(302, headers={"Location": location})


async def test_documented_ended_call_with_signed_redirect() -> None:
    """The documented ended call plus a 302 to GCS is one available recording, expiry read."""
    routes = Routes({CALL: call(), RECORDING: redirect()})
    async with provider("ultravox", routes) as uv:
        result = await uv.fetch_call(UUID_ID)
    assert result == Snapshot(
        status=CallStatus.ENDED,
        provider_status="ended:hangup",
        started_at=ts("2026-11-20T11:58:04.5Z"),
        ended_at=ts("2026-11-20T12:03:10Z"),
        end_reason="hangup",
        recordings=(RecordingSnapshot(id=UUID_ID, status=RecordingStatus.AVAILABLE, url=GCS,
                                      url_expires_at=ts("2026-11-20T12:04:00Z") + 300),),
    )
    assert routes.paths() == [CALL, RECORDING]
    assert all(r.headers["X-API-Key"] == API_KEY for r in routes.requests)


async def test_live_call_does_not_ask_for_a_recording() -> None:
    """A joined, not ended call is live since it was joined; /recording is not asked."""
    routes = Routes({CALL: call("ultravox_call_live")})
    async with provider("ultravox", routes) as uv:
        result = await uv.fetch_call(UUID_ID)
    assert result == Snapshot(status=CallStatus.LIVE, provider_status="joined",
                              started_at=ts("2026-11-20T11:58:04.5Z"))
    assert routes.paths() == [CALL]


async def test_created_call_is_pending() -> None:
    """A call nobody joined yet is pending, with no start time."""
    async with provider("ultravox", {CALL: call("ultravox_call_created")}) as uv:
        result = await uv.fetch_call(UUID_ID)
    assert result == Snapshot(status=CallStatus.PENDING, provider_status="created")


async def test_unjoined_call_expects_no_recording() -> None:
    """An unjoined call has no audio: no /recording request, recording_expected False."""
    routes = Routes({CALL: call("ultravox_call_unjoined")})
    async with provider("ultravox", routes) as uv:
        result = await uv.fetch_call(UUID_ID)
    assert result == Snapshot(status=CallStatus.ENDED, provider_status="ended:unjoined",
                              ended_at=ts("2026-11-20T11:58:30Z"), end_reason="unjoined",
                              recording_expected=False)
    assert routes.paths() == [CALL]


async def test_direct_200_recording_is_not_downloaded() -> None:
    """A 200 from /recording means the endpoint itself serves the audio; no byte is read."""
    body = EndlessBody()

    def audio(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body,
                              headers={"Content-Type": "audio/wav", "Content-Length": "96044"})

    async with provider("ultravox", {CALL: call(), RECORDING: audio}) as uv:
        result = await uv.fetch_call(UUID_ID)
    assert isinstance(result, Snapshot)
    assert result.recordings == (
        RecordingSnapshot(id=UUID_ID, status=RecordingStatus.AVAILABLE, url=BASE + RECORDING,
                          content_type="audio/wav", size=96044),)
    assert body.sent == 0


async def test_direct_200_document_is_not_a_recording() -> None:
    """A 200 carrying HTML or JSON from /recording is not audio: a transient failure."""
    page = httpx.Response(200, text="<html>oops</html>", headers={"Content-Type": "text/html"})
    with capture_logs() as logs:
        async with provider("ultravox", {CALL: call(), RECORDING: page}) as uv:
            result = await uv.fetch_call(UUID_ID)
    assert isinstance(result, PollFailed)
    assert result.kind is FailureKind.TRANSIENT
    assert [log["event"] for log in logs] == ["provider.unparseable"]


@pytest.mark.parametrize(("enabled", "expected"), [(False, True), (True, False), (None, False)])
async def test_recording_404(enabled: bool | None, expected: bool) -> None:
    """A 404 from /recording never means "none": disabled only makes a recording unlikely."""
    routes = {CALL: call(recordingEnabled=enabled), RECORDING: httpx.Response(404)}
    async with provider("ultravox", routes) as uv:
        result = await uv.fetch_call(UUID_ID)
    assert isinstance(result, Snapshot)
    assert result.status is CallStatus.ENDED
    assert result.recordings == ()
    assert result.recording_expected is None
    assert result.recording_unlikely is expected


@pytest.mark.parametrize(("url", "keyed"), [
    (BASE + RECORDING, True),
    ("https://storage.googleapis.com/b/r.wav?X-Goog-Expires=300", False),
    ("http://api.ultravox.ai" + RECORDING, False),  # another scheme is another origin
    ("https://api.ultravox.ai.evil.example" + RECORDING, False),
])
async def test_download_headers_only_for_the_api_origin(url: str, keyed: bool) -> None:
    """A download from the API itself carries the key; any other origin gets nothing."""
    async with provider("ultravox", {}) as uv:
        headers = uv.download_headers(url)
    assert headers == ({"X-API-Key": API_KEY} if keyed else {})


async def test_recording_endpoint_errors_fail_the_poll() -> None:
    """A 429 from /recording makes the whole poll rate limited, with its Retry-After."""
    limited = httpx.Response(429, headers={"Retry-After": "3"})
    async with provider("ultravox", {CALL: call(), RECORDING: limited}) as uv:
        result = await uv.fetch_call(UUID_ID)
    assert result == PollFailed(kind=FailureKind.RATE_LIMITED, message=f"HTTP 429 from {RECORDING}",
                                retry_after=3.0)


async def test_redirect_without_location_is_unparseable() -> None:
    """A redirect with no Location is a transient failure, not a recording."""
    async with provider("ultravox", {CALL: call(), RECORDING: httpx.Response(302)}) as uv:
        result = await uv.fetch_call(UUID_ID)
    assert isinstance(result, PollFailed)
    assert result.kind is FailureKind.TRANSIENT


async def test_unknown_end_reason_is_accepted() -> None:
    """An end reason Ultravox adds later is passed through, and the recording still asked for."""
    routes = {CALL: call(endReason="carrier_dropped"), RECORDING: redirect()}
    async with provider("ultravox", routes) as uv:
        result = await uv.fetch_call(UUID_ID)
    assert isinstance(result, Snapshot)
    assert (result.end_reason, result.provider_status) == ("carrier_dropped",
                                                           "ended:carrier_dropped")
    assert len(result.recordings) == 1


async def test_nulls_and_extra_fields_are_tolerated() -> None:
    """Null optional fields and unknown extra fields change nothing."""
    body = {"callId": UUID_ID, "ended": "2026-11-20T12:03:10Z", "endReason": None,
            "joined": None, "recordingEnabled": None, "metadata": None, "brandNew": {"x": [1]}}
    routes = {CALL: httpx.Response(200, json=body), RECORDING: httpx.Response(404)}
    async with provider("ultravox", routes) as uv:
        result = await uv.fetch_call(UUID_ID)
    assert result == Snapshot(status=CallStatus.ENDED, provider_status="ended",
                              ended_at=ts("2026-11-20T12:03:10Z"))


async def test_unreadable_times_are_tolerated_and_logged() -> None:
    """An ended call whose times are not timestamps is still ended; the field is logged."""
    routes = {CALL: call(ended="whenever", joined={"at": 1}), RECORDING: httpx.Response(404)}
    with capture_logs() as logs:
        async with provider("ultravox", routes) as uv:
            result = await uv.fetch_call(UUID_ID)
    assert isinstance(result, Snapshot)
    assert (result.status, result.started_at, result.ended_at) == (CallStatus.ENDED, None, None)
    assert {log["field"] for log in logs if log["event"] == "provider.bad_field"} == {
        "ended", "joined"}


async def test_numeric_end_time_is_read_as_unix_seconds() -> None:
    """``ended: 123`` is tolerated as a unix time rather than failing the poll."""
    routes = {CALL: call(ended=1795003200), RECORDING: httpx.Response(404)}
    async with provider("ultravox", routes) as uv:
        result = await uv.fetch_call(UUID_ID)
    assert isinstance(result, Snapshot)
    assert result.ended_at == 1795003200.0


async def test_wrong_end_reason_type_is_unparseable() -> None:
    """An endReason that is not a string fails the poll as transient, with a warning."""
    with capture_logs() as logs:
        async with provider("ultravox", {CALL: call(endReason=5)}) as uv:
            result = await uv.fetch_call(UUID_ID)
    assert isinstance(result, PollFailed)
    assert result.kind is FailureKind.TRANSIENT
    assert [log["event"] for log in logs] == ["provider.unparseable"]


async def test_recording_source_signed_link_gets_no_key() -> None:
    """A fresh signed link is returned byte for byte, with its expiry and without our key."""
    async with provider("ultravox", {RECORDING: redirect()}) as uv:
        source = await uv.recording_source(UUID_ID, UUID_ID)
    assert source == DownloadSource(url=GCS, headers={},
                                    expires_at=ts("2026-11-20T12:04:00Z") + 300)


async def test_recording_source_direct_endpoint_carries_the_key() -> None:
    """When the endpoint serves the audio itself, the download must send our key."""
    audio = httpx.Response(200, content=b"RIFF", headers={"Content-Type": "audio/wav"})
    async with provider("ultravox", {RECORDING: audio}) as uv:
        source = await uv.recording_source(UUID_ID, UUID_ID)
    assert source == DownloadSource(url=BASE + RECORDING, headers={"X-API-Key": API_KEY},
                                    content_type="audio/wav", size=4)


async def test_recording_source_relative_redirect_stays_on_the_api() -> None:
    """A relative Location resolves against the API, so it keeps the key."""
    async with provider("ultravox", {RECORDING: redirect("/files/r.wav?sig=a%2Fb")}) as uv:
        source = await uv.recording_source(UUID_ID, UUID_ID)
    assert source == DownloadSource(url=f"{BASE}/files/r.wav?sig=a%2Fb",
                                    headers={"X-API-Key": API_KEY})


async def test_recording_source_not_found() -> None:
    """A recording that is gone, or an id that is not the call's, is NotFound."""
    async with provider("ultravox", {RECORDING: httpx.Response(404)}) as uv:
        assert await uv.recording_source(UUID_ID, UUID_ID) == NotFound()
        assert await uv.recording_source(UUID_ID, "other") == NotFound()


async def test_malformed_call_id_is_never_requested() -> None:
    """A non-UUID id is rejected with a reason and never turned into a request."""
    routes = Routes({})
    async with provider("ultravox", routes) as uv:
        assert uv.validate_call_id("call_123") is not None
        assert uv.validate_call_id(UUID_ID) is None
        assert await uv.fetch_call("../../admin") == NotFound()
    assert routes.requests == []
