"""What `callwatch status` shows about archived, pending and paused recordings."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import pytest

from tests.archive.rig import archive_rig
from worker.cli.status import show_status
from worker.simulator import Fault, RecordingScript, expected_sha256

pytestmark = pytest.mark.anyio


async def test_status_shows_each_recordings_path_size_and_digest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Per recording: state, size, path and the full sha256, in text and in JSON."""
    async with archive_rig(tmp_path) as rig:
        script = rig.sim.world.add_call("envoy", starts_after=0, lasts=0.1, recordings=[
            RecordingScript(ready_after=0.1, size=50_000)])
        await rig.track(script)
        [call] = await rig.settled(script)
        digest = expected_sha256(script.recordings[0])
        assert await show_status(rig.config, "envoy", script.call_id, False, 10) == 0
        text = capsys.readouterr().out
        assert f"{script.call_id}  archived  50000 bytes  audio/mp4" in text
        assert f"path    envoy/{script.call_id}/{script.call_id}.m4a" in text
        assert f"sha256  {digest}" in text
        assert await show_status(rig.config, "envoy", script.call_id, True, 10) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["recordings"][0]["archive"] == {
            "path": call.recordings[0].archive_path, "size": 50_000, "sha256": digest}
        assert data["downloads"] == {}


async def test_status_shows_attempts_and_last_error_of_a_pending_download(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A recording still being retried shows its failed attempts and why the last one failed."""
    async with archive_rig(tmp_path, archive={"max_attempts": 50}) as rig:
        rig.sim.faults["files"].add(Fault.SERVER_ERROR, status=502)
        script = rig.sim.world.add_call("envoy", starts_after=0, lasts=0.1, recordings=[
            RecordingScript(ready_after=0.1, size=1000)])
        await rig.track(script)
        with anyio.fail_after(10):
            while True:
                found = await rig.store.download_info("envoy", script.call_id)
                if script.call_id in found and found[script.call_id].attempts >= 2:
                    break
                await anyio.sleep(0.05)
        rig.archiver.stop()
        assert await show_status(rig.config, "envoy", script.call_id, False, 10) == 0
        text = capsys.readouterr().out
        assert "failed attempt(s); last error: HTTP 502 from storage" in text
        assert await show_status(rig.config, "envoy", script.call_id, True, 10) == 0
        download = json.loads(capsys.readouterr().out)["downloads"][script.call_id]
        assert download["attempts"] >= 2 and download["last_error"] == "HTTP 502 from storage"


async def test_the_overview_says_when_archiving_is_paused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A paused archive is one loud line in the overview, and a field in its JSON."""
    async with archive_rig(tmp_path, start_archiver=False) as rig:
        await rig.store.set_archive_paused("disk full (ENOSPC)", time.time() - 120)
        assert await show_status(rig.config, None, None, False, 10) == 0
        text = capsys.readouterr().out
        assert "archive paused: disk full (ENOSPC) for 2m" in text
        assert await show_status(rig.config, None, None, True, 10) == 0
        archive = json.loads(capsys.readouterr().out)["archive"]
        assert archive["paused"] == "disk full (ENOSPC)" and archive["pending"] == 0
        await rig.store.set_archive_paused(None, time.time())
        assert await show_status(rig.config, None, None, False, 10) == 0
        assert "archive paused" not in capsys.readouterr().out
