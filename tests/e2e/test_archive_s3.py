"""The daemon as a subprocess archives to S3 (moto on loopback): verified, and nothing partial
is left in the bucket after faults, a SIGKILL mid-upload, and a restart."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import DaemonUnderTest, read_events, wait_until
from tests.e2e.test_archive import settled
from tests.e2e.test_daemon import track_directly
from tests.s3server import S3_KEY_ID, S3_SECRET, S3Server
from worker.demo import write_config
from worker.simulator import (
    Fault,
    RecordingScript,
    Simulator,
    World,
    expected_sha256,
    run_simulator,
)

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]
KIB = 1024


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(World()) as running:
        yield running


def s3_daemon(sim: Simulator, tmp_path: Path, server: S3Server, bucket: str,
              archive: str = "") -> DaemonUnderTest:
    """A daemon archiving to s3://bucket/rec, its credentials from the environment."""
    config, env = write_config(tmp_path, sim, archive=False, webhook=False,
                               extra="[archive]\n" + archive + f"""
[archive.s3]
endpoint_url = "{server.endpoint}"
region = "us-east-1"
access_key_id_env = "SIM_S3_KEY_ID"
secret_access_key_env = "SIM_S3_SECRET"
""")
    text = config.read_text().replace("[worker]\n", f'[worker]\narchive = "s3://{bucket}/rec"\n',
                                      1)
    config.write_text(text)
    env = {**env, "SIM_S3_KEY_ID": S3_KEY_ID, "SIM_S3_SECRET": S3_SECRET}
    return DaemonUnderTest(config=config, env=env, workdir=tmp_path)


def leftovers(server: S3Server, bucket: str) -> list[str]:
    """Scratch objects and unfinished multipart uploads."""
    return [k for k in server.keys(bucket) if "/.partial/" in k] + server.pending_uploads(bucket)


async def test_the_daemon_archives_to_s3_and_survives_a_kill_mid_upload(
        sim: Simulator, tmp_path: Path, s3_server: S3Server) -> None:
    """Killed with a multipart upload open; the restart aborts it, archives the recording,
    and every object read back through a plain S3 GET has the sha256 its event names."""
    bucket = s3_server.bucket()
    big = sim.world.add_call("apifycloud", starts_after=0, lasts=0.3, recordings=[
        RecordingScript(ready_after=0.2, size=12 * 1024 * KIB)])
    small = [sim.world.add_call(p, starts_after=0, lasts=0.3, recordings=[
        RecordingScript(ready_after=0.2, size=300 * KIB)]) for p in ("ultravox", "envoy")]
    # The big one: 9 MiB at once (a part is uploaded), then a drip the kill interrupts.
    sim.faults["files"].add(Fault.DRIP, after=9 * 1024 * KIB, delay=0.5, count=1,
                            match=big.call_id)
    sim.faults["files"].add(Fault.TRUNCATE_BODY, after=100 * KIB, count=1,
                            match=small[0].call_id)
    sim.faults["files"].add(Fault.XML_ERROR_200, count=1, match=small[1].call_id)
    daemon = s3_daemon(sim, tmp_path, s3_server, bucket, "timeout = 120\n")
    scripts = [big, *small]
    await track_directly(daemon.db, scripts)
    daemon.start()
    try:
        await wait_until(lambda: s3_server.pending_uploads(bucket), 30,
                         "an open multipart upload", daemon)
        daemon.kill()
        assert not any(big.call_id in k for k in s3_server.keys(bucket)
                       if "/.partial/" not in k)  # nothing partial under a final key
        daemon.start()
        await wait_until(lambda: settled(daemon.db, scripts), 60, "archived after restart",
                         daemon)
    finally:
        assert await daemon.stop() == 0
    assert daemon.exit_codes[0] == -9
    events = await read_events(daemon.db)
    archived = [json.loads(e.body)["data"]["recording"] for e in events
                if e.type == "recording.archived"]
    assert len(archived) == 3
    for recording in archived:
        archive = recording["archive"]
        assert archive["url"] == f"s3://{bucket}/rec/{archive['path']}"
        got = s3_server.client.get_object(Bucket=bucket, Key=f"rec/{archive['path']}")
        assert hashlib.sha256(got["Body"].read()).hexdigest() == archive["sha256"]
    assert {a["archive"]["sha256"] for a in archived} == {
        expected_sha256(s.recordings[0]) for s in scripts}
    assert leftovers(s3_server, bucket) == []
    assert len(s3_server.keys(bucket)) == 3
    # moto dates every upload 2010, so the restart's cleanup takes the killed run's upload.
    assert any(line.get("event") == "archive.partials_removed" for line in daemon.log_lines())
    log = daemon.log.read_text()
    assert S3_SECRET not in log and S3_KEY_ID not in log

