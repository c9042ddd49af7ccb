"""Ultravox's two recording oddities, end to end over loopback (issue 12, item 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.archive.rig import archive_rig
from worker.model import RecordingStatus, Terminal
from worker.simulator import RecordingScript, expected_sha256

pytestmark = pytest.mark.anyio


async def test_direct_recording_is_fetched_with_the_key_at_once(tmp_path: Path) -> None:
    """A /recording answering 200 with the audio is downloaded with the API key, no 401 first."""
    async with archive_rig(tmp_path) as rig:
        script = rig.sim.world.add_call("ultravox", starts_after=0, lasts=0.1,
                                        recordings=[RecordingScript(ready_after=0.1)],
                                        direct_recording=True)
        with capture_logs() as logs:
            await rig.track(script)
            [call] = await rig.settled(script)
    events = [entry["event"] for entry in logs]
    assert "recording.link_rejected" not in events, events
    assert "recording.link_refreshed" not in events, events
    assert "provider.auth_failed" not in events, events
    [rec] = call.recordings
    assert rec.status == RecordingStatus.ARCHIVED
    assert rec.archive_sha256 == expected_sha256(script.recordings[0])


async def test_recording_disabled_is_only_a_hint(tmp_path: Path) -> None:
    """recordingEnabled false and a first 404: a recording that shows up later is archived."""
    async with archive_rig(tmp_path) as rig:
        script = rig.sim.world.add_call("ultravox", starts_after=0, lasts=0.1,
                                        recordings=[RecordingScript(ready_after=1.5)],
                                        recording_enabled=False)
        await rig.track(script)
        [call] = await rig.settled(script)
        types = [e.type for e in await rig.events(script)]
    assert call.terminal == Terminal.COMPLETED
    [rec] = call.recordings
    assert rec.status == RecordingStatus.ARCHIVED
    assert types[-3:] == ["recording.available", "recording.archived", "call.completed"]
