"""Envoy: free-form statuses read through tables, and a JSON /recording endpoint."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from tests.providers.support import API_KEY, ENVOY_ID, Routes, load, provider
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
from worker.signed_urls import parse_timestamp, url_expiry

pytestmark = pytest.mark.anyio

CALL = f"/api/v1/calls/{ENVOY_ID}"
RECORDING = f"{CALL}/recording"
START, END = "2026-11-20T14:00:05+00:00", "2026-11-20T14:06:45+00:00"


def ts(text: str) -> float:
    value = parse_timestamp(text)
    assert value is not None
    return value


def call(name: str = "envoy_call_completed", **changes: Any) -> httpx.Response:
    return httpx.Response(200, json={**load(name), **changes})


def recording(**changes: Any) -> httpx.Response:
    return httpx.Response(200, json={**load("envoy_recording"), **changes})


async def fetch(routes: Routes | dict[str, Any], **config: Any) -> Any:
    async with provider("envoy", routes, **config) as envoy:
        return await envoy.fetch_call(ENVOY_ID)


async def test_documented_completed_call_with_recording() -> None:
    """The documented completed call plus /recording JSON is the exact snapshot."""
    doc = load("envoy_recording")
    routes = Routes({CALL: call(), RECORDING: recording()})
    result = await fetch(routes)
    assert result == Snapshot(
        status=CallStatus.ENDED,
        provider_status="COMPLETED",
        started_at=ts(START),
        ended_at=ts(END),
        end_reason="completed",
        recordings=(RecordingSnapshot(id=ENVOY_ID, status=RecordingStatus.AVAILABLE,
                                      url=doc["url"], url_expires_at=ts("2026-11-20T15:10:00Z"),
                                      content_type="audio/mp4", size=3276800),),
    )
    assert routes.paths() == [CALL, RECORDING]
    for request in routes.requests:
        assert request.headers["Authorization"] == f"Bearer {API_KEY}"
        assert request.headers["X-Organization-ID"] == "org_42"


async def test_scheduled_call_is_pending_without_a_start() -> None:
    """A scheduled call is pending; its planned start time is not reported as a start."""
    routes = Routes({CALL: call("envoy_call_scheduled")})
    assert await fetch(routes) == Snapshot(status=CallStatus.PENDING,
                                           provider_status="SCHEDULED")
    assert routes.paths() == [CALL]


@pytest.mark.parametrize("status", ["IN_PROGRESS", "in-progress", "In Progress", "RINGING",
                                    "ongoing", "CONNECTED"])
async def test_live_statuses(status: str) -> None:
    """In-progress spellings, compared case- and separator-insensitively, are live."""
    body = call("envoy_call_scheduled", status=status)
    assert await fetch({CALL: body}) == Snapshot(
        status=CallStatus.LIVE, provider_status=status, started_at=ts("2026-11-20T14:00:00Z"))


@pytest.mark.parametrize(("status", "reason"), [("FAILED", "failed"), ("no-answer", "no_answer"),
                                                ("Canceled", "canceled"), ("BUSY", "busy"),
                                                ("VOICEMAIL", "voicemail")])
async def test_terminal_statuses_end_the_call(status: str, reason: str) -> None:
    """Terminal statuses end the call even without an end time; the reason is the status."""
    body = call("envoy_call_scheduled", status=status)
    assert await fetch({CALL: body}) == Snapshot(
        status=CallStatus.ENDED, provider_status=status, end_reason=reason,
        started_at=ts("2026-11-20T14:00:00Z"))


async def test_end_time_ends_the_call_whatever_the_status() -> None:
    """An end time means ended, even next to a live status (which is then no end reason)."""
    body = call(status="IN_PROGRESS", recording_status="PROCESSING")
    assert await fetch({CALL: body}) == Snapshot(
        status=CallStatus.ENDED, provider_status="IN_PROGRESS", started_at=ts(START),
        ended_at=ts(END))


async def test_unknown_status_is_logged_and_pending() -> None:
    """An unknown status without an end time is pending, with a provider.unknown_status warning."""
    body = call("envoy_call_scheduled", status="WARMING_UP")
    with capture_logs() as logs:
        result = await fetch({CALL: body})
    assert result == Snapshot(status=CallStatus.PENDING, provider_status="WARMING_UP")
    warning = next(log for log in logs if log["event"] == "provider.unknown_status")
    assert warning["status"] == "WARMING_UP"
    assert warning["provider"] == "envoy"
    assert warning["call_id"] == ENVOY_ID


async def test_unknown_status_with_end_time_is_ended() -> None:
    """An unknown status next to an end time is ended, the status kept as its reason."""
    body = call(status="CARRIER_HUNG_UP", recording_status=None)
    result = await fetch({CALL: body})
    assert isinstance(result, Snapshot)
    assert (result.status, result.end_reason) == (CallStatus.ENDED, "carrier_hung_up")


async def test_failed_recording() -> None:
    """A failed recording status is a failed recording, without asking /recording."""
    routes = Routes({CALL: call(recording_status="FAILED")})
    result = await fetch(routes)
    assert isinstance(result, Snapshot)
    assert result.recordings == (RecordingSnapshot(id=ENVOY_ID, status=RecordingStatus.FAILED),)
    assert routes.paths() == [CALL]


@pytest.mark.parametrize("value", ["NONE", "not_recorded", "DISABLED", "no-recording"])
async def test_no_recording_statuses(value: str) -> None:
    """Statuses that say there is no recording make recording_expected False."""
    result = await fetch({CALL: call(recording_status=value)})
    assert isinstance(result, Snapshot)
    assert (result.recordings, result.recording_expected) == ((), False)


@pytest.mark.parametrize("value", [None, "PROCESSING", "pending", "IN_PROGRESS"])
async def test_processing_statuses_wait(value: str | None) -> None:
    """A recording still in the works is waited for: no recordings, no verdict."""
    result = await fetch({CALL: call(recording_status=value)})
    assert isinstance(result, Snapshot)
    assert (result.recordings, result.recording_expected) == ((), None)


async def test_unknown_recording_status_is_logged_and_waited_on() -> None:
    """An unknown recording status is logged and treated as still processing."""
    with capture_logs() as logs:
        result = await fetch({CALL: call(recording_status="TRANSCODING")})
    assert isinstance(result, Snapshot)
    assert result.recordings == ()
    assert any(log["event"] == "provider.unknown_status" and log["status"] == "TRANSCODING"
               for log in logs)


async def test_recording_404_is_still_processing() -> None:
    """AVAILABLE on the call but 404 on /recording: not served yet, keep waiting."""
    result = await fetch({CALL: call(), RECORDING: httpx.Response(404)})
    assert isinstance(result, Snapshot)
    assert (result.status, result.recordings) == (CallStatus.ENDED, ())


async def test_recording_errors_fail_the_poll() -> None:
    """A 503 on /recording makes the whole poll rate limited."""
    result = await fetch({CALL: call(), RECORDING: httpx.Response(503)})
    assert isinstance(result, PollFailed)
    assert result.kind is FailureKind.RATE_LIMITED


async def test_recording_expiry_falls_back_to_the_url() -> None:
    """Without a readable expires_at the URL's own X-Amz expiry is used; a bad size is None."""
    doc = load("envoy_recording")
    result = await fetch({CALL: call(), RECORDING: recording(expires_at=None,
                                                             file_size_bytes=-1)})
    assert isinstance(result, Snapshot)
    (rec,) = result.recordings
    assert rec.url_expires_at == url_expiry(doc["url"]) == ts("2026-11-20T14:10:00Z") + 3600
    assert rec.size is None


async def test_recording_without_url_is_not_there_yet() -> None:
    """A /recording reply with a null url reads as still processing."""
    result = await fetch({CALL: call(), RECORDING: recording(url=None)})
    assert isinstance(result, Snapshot)
    assert result.recordings == ()


async def test_wrong_types_are_unparseable() -> None:
    """A status or recording url of the wrong type fails the poll as transient."""
    with capture_logs() as logs:
        bad_status = await fetch({CALL: call(status=7)})
        bad_url = await fetch({CALL: call(), RECORDING: recording(url=["x"])})
    for result in (bad_status, bad_url):
        assert isinstance(result, PollFailed)
        assert result.kind is FailureKind.TRANSIENT
    assert [log["event"] for log in logs] == ["provider.unparseable"] * 2


async def test_organization_header_only_when_configured() -> None:
    """Without an organization id no X-Organization-ID header is sent."""
    routes = Routes({CALL: call("envoy_call_scheduled")})
    await fetch(routes, organization_id=None)
    assert "X-Organization-ID" not in routes.requests[0].headers


async def test_recording_source_storage_link_gets_no_token() -> None:
    """A fresh storage link comes with its expiry and without our bearer token."""
    doc = load("envoy_recording")
    async with provider("envoy", {RECORDING: recording()}) as envoy:
        source = await envoy.recording_source(ENVOY_ID, ENVOY_ID)
    assert source == DownloadSource(url=doc["url"], headers={},
                                    expires_at=ts("2026-11-20T15:10:00Z"),
                                    content_type="audio/mp4", size=3276800)


async def test_recording_source_on_the_api_carries_the_token() -> None:
    """A link on Envoy's own API needs our bearer token (and organization)."""
    url = "https://tryenvoy.ai/api/v1/files/r.mp4"
    async with provider("envoy", {RECORDING: recording(url=url)}) as envoy:
        source = await envoy.recording_source(ENVOY_ID, ENVOY_ID)
    assert isinstance(source, DownloadSource)
    assert source.headers == {"Authorization": f"Bearer {API_KEY}", "X-Organization-ID": "org_42"}


async def test_recording_source_not_found() -> None:
    """No recording, or a recording id that is not the call's, is NotFound."""
    async with provider("envoy", {RECORDING: httpx.Response(404)}) as envoy:
        assert await envoy.recording_source(ENVOY_ID, ENVOY_ID) == NotFound()
        assert await envoy.recording_source(ENVOY_ID, "rec_1") == NotFound()


async def test_any_safe_token_is_an_envoy_id() -> None:
    """Envoy ids are only inferred to be call_<uuid>: any safe token passes, unsafe ones fail."""
    async with provider("envoy", {}) as envoy:
        assert envoy.validate_call_id("call_abc") is None
        assert envoy.validate_call_id("abc:123") is None
        assert envoy.validate_call_id("call abc") is not None
        assert await envoy.fetch_call("a/b") == NotFound()
