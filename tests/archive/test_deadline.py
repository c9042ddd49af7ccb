"""An attempt's overall deadline (``[archive] max_seconds``) and the archive's file mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.archive.rig import archive_rig
from tests.archive.test_archiver import check_archived, ended_call
from worker.model import RecordingStatus
from worker.simulator import Fault

pytestmark = pytest.mark.anyio
KIB = 1024


async def test_a_dripping_server_frees_its_slot_at_max_seconds(tmp_path: Path) -> None:
    """One byte every 0.2 s never trips the idle timeout; max_seconds ends the attempt, the
    slot is free for the next recording, and the retry archives the whole file."""
    async with archive_rig(tmp_path, archive={"concurrency": 1, "max_seconds": 1.5,
                                              "timeout": 5}) as rig:
        rig.sim.faults["files"].add(Fault.DRIP, after=10 * KIB, delay=0.2, count=1)
        dripping = ended_call(rig, "envoy", 100 * KIB)
        other = ended_call(rig, "apifycloud", 50 * KIB)
        with capture_logs() as logs:
            await rig.track(dripping)
            await rig.track(other)
            calls = await rig.settled(dripping, other, timeout=30)
        for call, script in zip(calls, (dripping, other), strict=True):
            check_archived(rig, call, script)
        failed = [e for e in logs if e["event"] == "recording.download_failed"]
        assert len(failed) == 1
        assert "max_seconds" in failed[0]["reason"]


async def test_archive_files_are_0640_whatever_the_umask(tmp_path: Path) -> None:
    """A permissive umask (000) or a strict one (077) still gives exactly rw-r-----."""
    for umask in (0o000, 0o077):
        folder = tmp_path / f"u{umask:o}"
        folder.mkdir()
        old = os.umask(umask)
        try:
            async with archive_rig(folder) as rig:
                script = ended_call(rig, "envoy", 10 * KIB)
                await rig.track(script)
                [call] = await rig.settled(script)
                assert call.recordings[0].status == RecordingStatus.ARCHIVED
                [file] = rig.files()
                assert stat.S_IMODE(file.stat().st_mode) == 0o640
        finally:
            os.umask(old)
