"""Fake Envoy over real loopback HTTP: statuses, recording_status and the /recording JSON."""

from __future__ import annotations

import hashlib
from datetime import datetime

import httpx
import pytest

from tests.simulator.conftest import FakeClock, envoy_auth
from worker.simulator import RecordingScript, Simulator, World, expected_sha256

CALL_FIELDS = {
    "id", "status", "call_direction", "call_start_time", "call_end_time", "recording_status",
    "load_id", "load_number", "organization_id", "from_phone_number", "to_phone_number",
}  # fmt: skip
RECORDING_FIELDS = {
    "call_id", "url", "content_type", "expires_at", "recording_status", "duration_seconds",
    "file_size_bytes", "recording_start_time",
}  # fmt: skip


@pytest.mark.anyio
async def test_lifecycle_from_scheduled_to_recording_download(
    sim: Simulator, world: World, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """SCHEDULED -> IN_PROGRESS -> COMPLETED, recording_status null -> AVAILABLE, right bytes."""
    call = world.add_call(
        "envoy", starts_after=1, lasts=4, recordings=[RecordingScript(ready_after=2, size=9000)]
    )
    url = f"{sim.base_urls['envoy']}/api/v1/calls/{call.call_id}"
    seen = []
    for step in (0, 1, 4, 2):
        clock.advance(step)
        body = (await client.get(url, headers=envoy_auth(sim))).json()
        assert set(body) == CALL_FIELDS
        seen.append((body["status"], body["recording_status"], body["call_end_time"] is None))
    assert seen == [
        ("SCHEDULED", None, True),
        ("IN_PROGRESS", None, True),
        ("COMPLETED", None, False),
        ("COMPLETED", "AVAILABLE", False),
    ]
    recording = (await client.get(url + "/recording", headers=envoy_auth(sim))).json()
    assert set(recording) == RECORDING_FIELDS
    assert (recording["content_type"], recording["file_size_bytes"]) == ("audio/mp4", 9000)
    assert (recording["duration_seconds"], recording["recording_status"]) == (4, "AVAILABLE")
    expires = datetime.fromisoformat(recording["expires_at"]).timestamp()
    assert f"Expires={int(expires)}&" in recording["url"]
    download = await client.get(recording["url"])
    assert hashlib.sha256(download.content).hexdigest() == expected_sha256(call.recordings[0])


@pytest.mark.anyio
async def test_recording_is_404_while_processing_or_failed(
    sim: Simulator, world: World, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """/recording answers 404 until ready, and the call says FAILED when the recording fails."""
    call = world.add_call("envoy", lasts=1, recordings=[RecordingScript(ready_after=1, fails=True)])
    url = f"{sim.base_urls['envoy']}/api/v1/calls/{call.call_id}"
    clock.advance(1.5)
    assert (await client.get(url + "/recording", headers=envoy_auth(sim))).status_code == 404
    clock.advance(1)
    assert (await client.get(url, headers=envoy_auth(sim))).json()["recording_status"] == "FAILED"
    assert (await client.get(url + "/recording", headers=envoy_auth(sim))).status_code == 404


@pytest.mark.anyio
async def test_unanswered_and_scripted_final_statuses(
    sim: Simulator, world: World, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """A call nobody joins ends NO_ANSWER without start time; final_status overrides COMPLETED."""
    unanswered = world.add_call("envoy", starts_after=None, join_timeout=3, recordings=())
    failed = world.add_call("envoy", lasts=1, final_status="FAILED")
    clock.advance(3)
    base = f"{sim.base_urls['envoy']}/api/v1/calls/"
    body = (await client.get(base + unanswered.call_id, headers=envoy_auth(sim))).json()
    assert (body["status"], body["call_start_time"], body["recording_status"]) == (
        "NO_ANSWER", None, None,
    )  # fmt: skip
    assert body["call_end_time"] is not None
    body = (await client.get(base + failed.call_id, headers=envoy_auth(sim))).json()
    assert body["status"] == "FAILED"


@pytest.mark.anyio
async def test_bearer_token_is_required_and_unknown_ids_are_404(
    sim: Simulator, world: World, client: httpx.AsyncClient
) -> None:
    """No or a wrong Bearer token is 401; an unknown call id is 404."""
    base = f"{sim.base_urls['envoy']}/api/v1/calls/"
    call = world.add_call("envoy")
    assert (await client.get(base + call.call_id)).status_code == 401
    wrong = {"Authorization": "Bearer wrong"}
    assert (await client.get(base + call.call_id, headers=wrong)).status_code == 401
    reply = await client.get(base + "call_unknown", headers=envoy_auth(sim))
    assert reply.status_code == 404
    assert reply.json() == {"detail": "Call not found"}
