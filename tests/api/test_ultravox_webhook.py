"""POST /v1/providers/ultravox/webhook: Ultravox's signature, checked as PROVIDERS.md says."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import httpx
import pytest

from tests.api.support import HOOK_SECRET, UV_ID, TestRuntime, make_config, ultravox_headers
from worker.api.server import ApiServer
from worker.api.ultravox import VerificationError, signature, verify
from worker.store.base import NewCall
from worker.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

HOOK = "/v1/providers/ultravox/webhook"
FAR = 10_000.0  # seconds: a next poll nobody would wait for


def ended(call_id: str = UV_ID, event: str = "call.ended") -> bytes:
    return json.dumps({"event": event, "call": {"callId": call_id, "ended": "2026-01-01T00:00:00Z",
                                               "endReason": "hangup"}}).encode()


async def track_far(store: SQLiteStore, call_id: str = UV_ID) -> None:
    """Track a call whose next poll is far away, as after a poll with a long interval."""
    await store.track(NewCall(provider="ultravox", call_id=call_id), time.time() + FAR)


async def next_poll(store: SQLiteStore, call_id: str = UV_ID) -> float:
    call = await store.get_call("ultravox", call_id)
    assert call is not None
    return call.next_poll_at


async def test_valid_call_ended_makes_the_call_due_and_wakes_the_scheduler(
        anonymous: httpx.AsyncClient, store: SQLiteStore, runtime: TestRuntime) -> None:
    """A signed call.ended is 200, the call is due now, and the ultravox lane is woken."""
    await track_far(store)
    body = ended()
    reply = await anonymous.post(HOOK, content=body, headers=ultravox_headers(body, HOOK_SECRET))
    assert reply.status_code == 200
    assert reply.json() == {"action": "poll", "event": "call.ended", "call_id": UV_ID}
    assert await next_poll(store) <= time.time()
    assert runtime.scheduler.woken == ["ultravox"]


@pytest.mark.parametrize("event", ["call.started", "call.joined"])
async def test_start_events_also_poll_now(anonymous: httpx.AsyncClient, store: SQLiteStore,
                                          event: str) -> None:
    """call.started and call.joined make the call due too: its start is noticed at once."""
    await track_far(store)
    body = ended(event=event)
    reply = await anonymous.post(HOOK, content=body, headers=ultravox_headers(body, HOOK_SECRET))
    assert reply.status_code == 200
    assert await next_poll(store) <= time.time()


async def test_tampered_body_is_401_and_changes_nothing(
        anonymous: httpx.AsyncClient, store: SQLiteStore, runtime: TestRuntime) -> None:
    """A body altered after signing is refused; the call keeps its schedule."""
    await track_far(store)
    headers = ultravox_headers(ended(), HOOK_SECRET)
    tampered = ended().replace(b"hangup", b"hangux")
    reply = await anonymous.post(HOOK, content=tampered, headers=headers)
    assert reply.status_code == 401
    assert "no X-Ultravox-Webhook-Signature matches" in reply.json()["error"]
    assert await next_poll(store) > time.time() + FAR / 2
    assert runtime.scheduler.woken == []


async def test_tampered_timestamp_is_401(anonymous: httpx.AsyncClient,
                                         store: SQLiteStore) -> None:
    """The timestamp is part of what is signed: changing it breaks the signature."""
    await track_far(store)
    body = ended()
    headers = ultravox_headers(body, HOOK_SECRET)
    headers["X-Ultravox-Webhook-Timestamp"] = headers["X-Ultravox-Webhook-Timestamp"][:-4] + "999Z"
    reply = await anonymous.post(HOOK, content=body, headers=headers)
    assert reply.status_code == 401


async def test_stale_timestamp_is_401_even_when_signed(anonymous: httpx.AsyncClient,
                                                       store: SQLiteStore) -> None:
    """A correctly signed request sent 90 s ago is a replay."""
    await track_far(store)
    body = ended()
    reply = await anonymous.post(HOOK, content=body,
                                 headers=ultravox_headers(body, HOOK_SECRET, skew=-90))
    assert reply.status_code == 401
    assert "old (limit 60 s)" in reply.json()["error"]
    assert await next_poll(store) > time.time() + FAR / 2


async def test_future_timestamp_is_401(anonymous: httpx.AsyncClient) -> None:
    """A timestamp 90 s ahead is refused as well (a clock that far off is not trusted)."""
    body = ended()
    reply = await anonymous.post(HOOK, content=body,
                                 headers=ultravox_headers(body, HOOK_SECRET, skew=90))
    assert reply.status_code == 401
    assert "in the future" in reply.json()["error"]


async def test_rotated_secret_second_signature_valid_is_accepted(
        anonymous: httpx.AsyncClient, store: SQLiteStore) -> None:
    """During a rotation Ultravox lists two signatures; one matching is enough."""
    await track_far(store)
    body = ended()
    headers = ultravox_headers(body, "the-old-secret-nobody-has", HOOK_SECRET)
    assert "," in headers["X-Ultravox-Webhook-Signature"]
    reply = await anonymous.post(HOOK, content=body, headers=headers)
    assert reply.status_code == 200
    assert await next_poll(store) <= time.time()


async def test_rotated_secret_with_no_valid_signature_is_401(
        anonymous: httpx.AsyncClient) -> None:
    """Two signatures, neither made with our secret: refused."""
    body = ended()
    reply = await anonymous.post(HOOK, content=body,
                                 headers=ultravox_headers(body, "one-secret", "another-secret"))
    assert reply.status_code == 401


@pytest.mark.parametrize("missing", ["X-Ultravox-Webhook-Timestamp",
                                     "X-Ultravox-Webhook-Signature"])
async def test_missing_headers_are_401_naming_the_header(anonymous: httpx.AsyncClient,
                                                         missing: str) -> None:
    """Each missing header is reported by name."""
    body = ended()
    headers = ultravox_headers(body, HOOK_SECRET)
    del headers[missing]
    reply = await anonymous.post(HOOK, content=body, headers=headers)
    assert reply.status_code == 401
    assert reply.json()["error"] == f"missing {missing} header"


async def test_unparseable_timestamp_is_401(anonymous: httpx.AsyncClient) -> None:
    """A timestamp that is not ISO 8601 is refused before any HMAC is computed."""
    body = ended()
    headers = ultravox_headers(body, HOOK_SECRET)
    headers["X-Ultravox-Webhook-Timestamp"] = "yesterday"
    reply = await anonymous.post(HOOK, content=body, headers=headers)
    assert reply.status_code == 401
    assert "not an ISO 8601 time" in reply.json()["error"]


async def test_untracked_call_is_202_and_ignored(anonymous: httpx.AsyncClient,
                                                 runtime: TestRuntime) -> None:
    """An authentic webhook for a call we do not track is acknowledged, nothing else."""
    body = ended(call_id="11111111-2222-4333-8444-555555555555")
    reply = await anonymous.post(HOOK, content=body, headers=ultravox_headers(body, HOOK_SECRET))
    assert reply.status_code == 202
    assert reply.json()["action"] == "ignored"
    assert runtime.scheduler.woken == []


async def test_other_event_types_are_202(anonymous: httpx.AsyncClient,
                                         store: SQLiteStore) -> None:
    """call.billed needs no poll: acknowledged, the schedule untouched."""
    await track_far(store)
    body = ended(event="call.billed")
    reply = await anonymous.post(HOOK, content=body, headers=ultravox_headers(body, HOOK_SECRET))
    assert reply.status_code == 202
    assert await next_poll(store) > time.time() + FAR / 2


async def test_signed_but_malformed_body_is_400(anonymous: httpx.AsyncClient) -> None:
    """A verified body that is not the documented shape is a 400, not a crash."""
    for body in (b"[]", b"not json", b'{"event": 3}'):
        reply = await anonymous.post(HOOK, content=body,
                                     headers=ultravox_headers(body, HOOK_SECRET))
        assert reply.status_code == 400, body


async def test_without_a_configured_secret_the_route_is_404(tmp_path: Path,
                                                            store: SQLiteStore) -> None:
    """No ultravox_webhook_secret: the route answers as if it did not exist."""
    runtime = TestRuntime(config=make_config(tmp_path, hook_secret=False), store=store)
    api = ApiServer(runtime, listen="127.0.0.1:0")
    async with anyio.create_task_group() as tg:
        await tg.start(api.run)
        async with httpx.AsyncClient(base_url=api.url) as http:
            body = ended()
            reply = await http.post(HOOK, content=body,
                                    headers=ultravox_headers(body, HOOK_SECRET))
        api.stop()
    assert reply.status_code == 404
    assert reply.json() == {"error": "not found"}


# --------------------------------------------------------------------------- verify() alone


def test_verify_accepts_ultravox_timestamp_forms() -> None:
    """Z, an explicit offset, and a time without offset (taken as UTC) all verify."""
    now = 1_800_000_000.0
    for stamp in (b"2027-01-15T08:00:00.000000Z", b"2027-01-15T08:00:00+00:00",
                  b"2027-01-15T09:00:00+01:00", b"2027-01-15T08:00:00"):
        sig = signature(b"s", b"{}", stamp).encode()
        verify(b"s", b"{}", timestamp=stamp, signatures=sig, now=now)


def test_verify_allows_spaces_and_upper_case_hex_in_the_list() -> None:
    """`sig1, SIG2` is read as two signatures, case-insensitively."""
    stamp = b"2027-01-15T08:00:00Z"
    good = signature(b"s", b"{}", stamp).upper().encode()
    verify(b"s", b"{}", timestamp=stamp, signatures=b"deadbeef, " + good, now=1_800_000_000.0)


def test_verify_rejects_an_empty_signature_list() -> None:
    """A header of only commas holds no signature that could match."""
    with pytest.raises(VerificationError):
        verify(b"s", b"{}", timestamp=b"2027-01-15T08:00:00Z", signatures=b",,,",
               now=1_800_000_000.0)


def test_verify_edges_of_the_window() -> None:
    """60 s old or ahead is still fine; 61 s is not."""
    stamp = b"2027-01-15T08:00:00Z"
    sig = signature(b"s", b"{}", stamp).encode()
    for now, ok in ((1_800_000_060.0, True), (1_799_999_940.0, True),
                    (1_800_000_061.0, False), (1_799_999_939.0, False)):
        if ok:
            verify(b"s", b"{}", timestamp=stamp, signatures=sig, now=now)
        else:
            with pytest.raises(VerificationError):
                verify(b"s", b"{}", timestamp=stamp, signatures=sig, now=now)
