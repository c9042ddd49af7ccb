"""apifycloud video: an envelope with participants and recordings inline."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from tests.providers.support import APIFY_ID, WIDGET_KEY, Routes, load, provider
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
from worker.providers.apifycloud import _recordings
from worker.signed_urls import parse_timestamp

pytestmark = pytest.mark.anyio

CALL = f"/api/calls/{APIFY_ID}"
S3 = ("https://rtk.s3.amazonaws.com/r.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256"
      "&X-Amz-Date=20261120T110000Z&X-Amz-Expires=900&X-Amz-Signature=0a%2F1")


def ts(text: str) -> float:
    value = parse_timestamp(text)
    assert value is not None
    return value


def envelope(name: str = "apifycloud_call_ended", **changes: Any) -> dict[str, Any]:
    body = load(name)
    body["data"].update(changes)
    return body


def call(name: str = "apifycloud_call_ended", **changes: Any) -> httpx.Response:
    return httpx.Response(200, json=envelope(name, **changes))


async def fetch(routes: Routes | dict[str, Any], **config: Any) -> Any:
    async with provider("apifycloud", routes, **config) as apify:
        return await apify.fetch_call(APIFY_ID)


async def test_documented_ended_call() -> None:
    """The documented ended call: earliest join, latest leave, both recordings as reported."""
    doc = load("apifycloud_call_ended")
    routes = Routes({CALL: call()})
    result = await fetch(routes)
    assert result == Snapshot(
        status=CallStatus.ENDED,
        provider_status="ended",
        started_at=ts("2026-11-20T10:00:12Z"),
        ended_at=ts("2026-11-20T10:30:55Z"),
        recordings=(
            RecordingSnapshot(id="rec_1", status=RecordingStatus.AVAILABLE,
                              url=doc["data"]["recordings"][0]["url"],
                              url_expires_at=ts("2026-11-20T10:32:00Z") + 604800),
            RecordingSnapshot(id="rec_2", status=RecordingStatus.PROCESSING),
        ),
    )
    headers = routes.requests[0].headers
    assert (headers["X-App-Id"], headers["X-Widget-Key"]) == ("app_7", WIDGET_KEY)


async def test_active_call_is_live() -> None:
    """An active call is live from its first participant's join, with no end yet."""
    assert await fetch({CALL: call("apifycloud_call_active")}) == Snapshot(
        status=CallStatus.LIVE, provider_status="active", started_at=ts("2026-11-20T10:00:12Z"))


async def test_created_call_is_pending() -> None:
    """A created call is pending and reports no times."""
    body = call("apifycloud_call_active", status="created")
    assert await fetch({CALL: body}) == Snapshot(status=CallStatus.PENDING,
                                                 provider_status="created")


async def test_explicit_call_times_win() -> None:
    """data.startedAt and data.endedAt, when present, beat the participants' times."""
    body = call(startedAt="2026-11-20T10:00:00Z", endedAt="2026-11-20T10:31:00Z")
    result = await fetch({CALL: body})
    assert isinstance(result, Snapshot)
    assert (result.started_at, result.ended_at) == (ts("2026-11-20T10:00:00Z"),
                                                    ts("2026-11-20T10:31:00Z"))


async def test_unknown_status_is_logged_and_pending() -> None:
    """An unknown call status is pending, with a provider.unknown_status warning."""
    with capture_logs() as logs:
        result = await fetch({CALL: call(status="archived")})
    assert isinstance(result, Snapshot)
    assert result.status is CallStatus.PENDING
    assert [(log["event"], log["status"]) for log in logs] == [("provider.unknown_status",
                                                                "archived")]


async def test_s3_expiry_and_hostile_id_pass_through() -> None:
    """A recording's X-Amz expiry is read and its id, however hostile, is kept unchanged."""
    rec = {"id": "../../etc/passwd", "url": S3, "status": "available",
           "contentType": "video/mp4", "size": 1234, "providerArchiveId": "x"}
    result = await fetch({CALL: call(recordings=[rec])})
    assert isinstance(result, Snapshot)
    assert result.recordings == (RecordingSnapshot(
        id="../../etc/passwd", status=RecordingStatus.AVAILABLE, url=S3,
        url_expires_at=ts("2026-11-20T11:00:00Z") + 900, content_type="video/mp4", size=1234),)


async def test_unusable_recording_entries_are_skipped_with_a_warning() -> None:
    """Entries without a string id (or repeating one) are skipped and logged, not fatal."""
    recs = [{"status": "available", "url": S3}, {"id": 7, "status": "failed"}, "rec_x",
            {"id": "ok", "status": "failed"}, {"id": "ok", "status": "available", "url": S3}]
    with capture_logs() as logs:
        result = await fetch({CALL: call(recordings=recs)})
    assert isinstance(result, Snapshot)
    assert result.recordings == (RecordingSnapshot(id="ok", status=RecordingStatus.FAILED),)
    assert [(log["event"], log["without_id"], log["duplicates"]) for log in logs] == [
        ("provider.bad_recording", 3, 1)]  # one line per reply, however many entries


async def test_recordings_are_parsed_only_up_to_one_past_the_cap() -> None:
    """15,000 listed recordings: the adapter builds cap + 1 of them and says how many there were."""
    recs = [{"id": f"r{i}", "status": "processing"} for i in range(15_000)]
    with capture_logs() as logs:
        result = await fetch({CALL: call(recordings=recs)})
    assert isinstance(result, Snapshot)
    assert [r.id for r in result.recordings] == [f"r{i}" for i in range(101)]
    assert [(log["event"], log["listed"]) for log in logs] == [
        ("provider.too_many_recordings", 15_000)]


async def test_thousands_of_bad_participants_log_once() -> None:
    """A reply with thousands of malformed participants logs one warning line, not thousands."""
    with capture_logs() as logs:
        result = await fetch({CALL: call(participants=["x"] * 5000)})
    assert isinstance(result, Snapshot)
    assert [log["event"] for log in logs] == ["provider.too_many_participants",
                                              "provider.bad_field"]


async def test_unknown_recording_status_is_processing() -> None:
    """An unknown recording status reads as processing, with a warning."""
    with capture_logs() as logs:
        result = await fetch({CALL: call(recordings=[{"id": "r", "status": "uploading"}])})
    assert isinstance(result, Snapshot)
    assert result.recordings == (RecordingSnapshot(id="r", status=RecordingStatus.PROCESSING),)
    assert [log["event"] for log in logs] == ["provider.unknown_status"]


async def test_available_without_url_is_still_processing() -> None:
    """A recording marked available but without a link is not usable yet: processing."""
    result = await fetch({CALL: call(recordings=[{"id": "r", "status": "available",
                                                  "url": None}])})
    assert isinstance(result, Snapshot)
    assert result.recordings == (RecordingSnapshot(id="r", status=RecordingStatus.PROCESSING),)


async def test_nulls_and_extra_fields_are_tolerated() -> None:
    """Null participants and recordings and unknown extra fields change nothing."""
    body = {"ok": True, "meta": {"v": 2},
            "data": {"status": "ended", "participants": None, "recordings": None, "x": [1]}}
    assert await fetch({CALL: httpx.Response(200, json=body)}) == Snapshot(
        status=CallStatus.ENDED, provider_status="ended")


@pytest.mark.parametrize(
    "body",
    [{"ok": False, "error": "internal"}, {"ok": True}, {"ok": True, "data": None},
     {"data": {"status": "ended"}}, {"ok": "true", "data": {"status": "ended"}},
     {"ok": True, "data": {"status": "ended", "recordings": "x"}},
     {"ok": True, "data": {"status": "ended", "participants": {"a": 1}}},
     {"ok": True, "data": {"status": ["ended"]}}, {"ok": True, "data": []}],
)
async def test_bad_envelopes_are_unparseable(body: dict[str, Any]) -> None:
    """ok not true, missing data or wrongly typed fields fail the poll as transient."""
    with capture_logs() as logs:
        result = await fetch({CALL: httpx.Response(200, json=body)})
    assert isinstance(result, PollFailed)
    assert result.kind is FailureKind.TRANSIENT
    assert [log["event"] for log in logs] == ["provider.unparseable"]


async def test_headers_only_when_configured() -> None:
    """Without an app id or widget key, neither header is sent."""
    routes = Routes({CALL: call()})
    await fetch(routes, app_id=None, widget_key=None)
    assert "X-App-Id" not in routes.requests[0].headers
    assert "X-Widget-Key" not in routes.requests[0].headers


async def test_recording_source_polls_the_call_for_a_fresh_link() -> None:
    """recording_source re-reads the call and returns that recording's current link."""
    fresh = {"id": "rec_1", "status": "available", "url": S3, "contentType": "video/mp4"}
    routes = Routes({CALL: call(recordings=[fresh])})
    async with provider("apifycloud", routes) as apify:
        source = await apify.recording_source(APIFY_ID, "rec_1")
    assert source == DownloadSource(url=S3, headers={},
                                    expires_at=ts("2026-11-20T11:00:00Z") + 900,
                                    content_type="video/mp4")


async def test_recording_source_not_found() -> None:
    """A missing call, a missing recording or one without a link is NotFound."""
    async with provider("apifycloud", {CALL: [httpx.Response(404), call()]}) as apify:
        assert await apify.recording_source(APIFY_ID, "rec_1") == NotFound()
        assert await apify.recording_source(APIFY_ID, "rec_9") == NotFound()
        assert await apify.recording_source(APIFY_ID, "rec_2") == NotFound()


async def test_recording_source_failure_passes_through() -> None:
    """A failed poll while refreshing a link is reported as that failure."""
    async with provider("apifycloud", {CALL: httpx.Response(429)}) as apify:
        source = await apify.recording_source(APIFY_ID, "rec_1")
    assert isinstance(source, PollFailed)
    assert source.kind is FailureKind.RATE_LIMITED


async def test_call_ids_are_uuids() -> None:
    """apifycloud call ids are UUIDs; anything else is rejected and never requested."""
    routes = Routes({})
    async with provider("apifycloud", routes) as apify:
        assert apify.validate_call_id(APIFY_ID) is None
        assert apify.validate_call_id("room-1") is not None
        assert await apify.fetch_call("room-1") == NotFound()
    assert routes.requests == []


@settings(max_examples=200, deadline=None)
@given(entries=st.lists(st.one_of(
    st.builds(lambda i: {"id": f"r{i}", "status": "processing"}, st.integers(0, 30)),
    st.just({"status": "available"}), st.just("junk"), st.none()), max_size=80),
    limit=st.integers(1, 20))
def test_recordings_stop_one_past_the_limit(entries: list[Any], limit: int) -> None:
    """The parsed list is the first distinct ids in order, never more than limit + 1 of them."""
    distinct = list(dict.fromkeys(e["id"] for e in entries if isinstance(e, dict) and "id" in e))
    with capture_logs():
        parsed = _recordings(entries, structlog.get_logger(), limit)
    assert [r.id for r in parsed] == distinct[:limit + 1]
