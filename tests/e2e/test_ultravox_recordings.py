"""The two Ultravox recording bugs of issue 12 (item 6), against a real daemon subprocess."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import DaemonUnderTest, read_events, wait_until
from tests.e2e.test_daemon import track
from worker.demo import write_config
from worker.simulator import RecordingScript, Simulator, World, run_simulator
from worker.simulator.world import CallScript

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

TRACKING = {"poll_interval": 0.3, "pending_poll_interval": 0.3, "recording_poll_interval": 0.3,
            "recording_grace": 30, "not_found_grace": 30, "max_tracking_age": 300}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(World()) as running:
        yield running


async def history(daemon: DaemonUnderTest, script: CallScript) -> list[dict[str, object]]:
    return [{"type": e.type, **json.loads(e.body)["data"]} for e in await read_events(daemon.db)
            if e.call_id == script.call_id]


async def settled(daemon: DaemonUnderTest, script: CallScript) -> bool:
    events = await history(daemon, script)
    return bool(events) and events[-1]["type"] in ("call.completed", "call.tracking_failed")


async def test_ultravox_recording_cases(sim: Simulator, tmp_path: Path) -> None:
    """Direct 200 audio is fetched with the key at once; disabled recording is only a hint."""
    config, env = write_config(tmp_path, sim, archive=True, webhook=False, tracking=TRACKING)
    daemon = DaemonUnderTest(config=config, env=env, workdir=tmp_path)
    direct = sim.world.add_call("ultravox", starts_after=0, lasts=0.2, direct_recording=True,
                                recordings=[RecordingScript(ready_after=0.2, size=8192)])
    disabled = sim.world.add_call("ultravox", starts_after=0, lasts=0.2,
                                  recording_enabled=False,
                                  recordings=[RecordingScript(ready_after=2.0, size=8192)])
    for script in (direct, disabled):
        assert track(daemon, script).returncode == 0
    daemon.start()
    try:
        for script in (direct, disabled):
            await wait_until(lambda s=script: settled(daemon, s), 30,  # type: ignore[misc]
                             f"{script.call_id} to settle", daemon)
    finally:
        await daemon.stop()
    for script in (direct, disabled):
        types = [e["type"] for e in await history(daemon, script)]
        assert types == ["call.started", "call.ended", "recording.available",
                         "recording.archived", "call.completed"], (script.call_id, types)
    log = [line["event"] for line in daemon.log_lines()]
    assert "recording.link_rejected" not in log  # no keyless request to the API first
    assert "provider.auth_failed" not in log
