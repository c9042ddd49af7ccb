"""The archiver writing to S3 (moto on loopback), fed by the simulator over real sockets.

Every stored object is read back with a plain S3 GET (boto3) and hashed; after faults the
bucket holds no scratch object and no unfinished multipart upload.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from tests.archive.conftest import S3Server, s3_config
from tests.archive.rig import Rig, archive_rig
from tests.archive.test_archiver import check_outbox_order, ended_call
from tests.webhooks.schema import check_body
from worker.archive import layout
from worker.archive.s3 import S3Target
from worker.model import RecordingStatus, TrackedCall
from worker.simulator import Fault, content_bytes, expected_sha256
from worker.simulator.world import CallScript

pytestmark = pytest.mark.anyio
KIB = 1024


def check_in_bucket(server: S3Server, bucket: str, call: TrackedCall) -> None:
    """Each archived recording is at rec/<path>, and its bytes hash to the recorded sha256."""
    for rec in call.recordings:
        assert rec.status == RecordingStatus.ARCHIVED, rec
        got = server.client.get_object(Bucket=bucket, Key=f"rec/{rec.archive_path}")
        data = got["Body"].read()
        assert len(data) == rec.archive_size
        assert hashlib.sha256(data).hexdigest() == rec.archive_sha256
        assert got["Metadata"]["sha256"] == rec.archive_sha256


def check_clean(server: S3Server, bucket: str) -> None:
    """No scratch object, no unfinished multipart upload."""
    assert [k for k in server.keys(bucket) if "/.partial/" in k] == []
    assert server.pending_uploads(bucket) == []


async def test_recordings_are_archived_to_s3_with_their_digest(tmp_path: Path,
                                                               s3_server: S3Server) -> None:
    """Every provider's recordings land in the bucket, verified; events carry s3:// URLs."""
    bucket = s3_server.bucket()
    target = S3Target(s3_config(s3_server, bucket), stale_after=3600)
    async with archive_rig(tmp_path, target=target) as rig:
        scripts = [ended_call(rig, "ultravox"), ended_call(rig, "envoy", 9 * 1024 * KIB),
                   ended_call(rig, "apifycloud", 100 * KIB, 150 * KIB)]
        await rig.track(*scripts)
        calls = await rig.settled(*scripts)
        for call, script in zip(calls, scripts, strict=True):
            check_in_bucket(s3_server, bucket, call)
            await check_outbox_order(rig, script)
        event = next(e for e in await rig.events(scripts[1]) if e.type == "recording.archived")
        check_body(event.body)
        archive = json.loads(event.body)["data"]["recording"]["archive"]
        assert archive["url"] == f"s3://{bucket}/rec/{archive['path']}"
        assert archive["sha256"] == expected_sha256(scripts[1].recordings[0])
    check_clean(s3_server, bucket)
    assert list(tmp_path.rglob("*.part")) == []  # no local copy either


@pytest.mark.parametrize(("fault", "params"), [
    (Fault.TRUNCATE_BODY, {"after": 50 * KIB, "count": 1}),
    (Fault.EXPIRE_MID_DOWNLOAD, {"after": 300 * KIB, "stall": 0.1, "count": 1}),
    (Fault.XML_ERROR_200, {"count": 1}),
])
async def test_faulty_downloads_leave_nothing_partial_in_the_bucket(
        tmp_path: Path, s3_server: S3Server, fault: Fault, params: dict[str, object]) -> None:
    """Truncated, expired and XML-bodied downloads end archived whole, with no leftovers."""
    bucket = s3_server.bucket()
    target = S3Target(s3_config(s3_server, bucket), stale_after=3600)
    async with archive_rig(tmp_path, target=target) as rig:
        rig.sim.faults["files"].add(fault, **params)
        script = ended_call(rig, "ultravox", 1024 * KIB)
        await rig.track(script)
        [call] = await rig.settled(script)
        check_in_bucket(s3_server, bucket, call)
    check_clean(s3_server, bucket)


async def test_an_xml_body_every_time_leaves_no_object(tmp_path: Path,
                                                       s3_server: S3Server) -> None:
    """archive_failed after max_attempts: no final object, no scratch, no open upload."""
    bucket = s3_server.bucket()
    target = S3Target(s3_config(s3_server, bucket), stale_after=3600)
    async with archive_rig(tmp_path, target=target, archive={"max_attempts": 2}) as rig:
        rig.sim.faults["files"].add(Fault.XML_ERROR_200)
        script = ended_call(rig, "apifycloud")
        await rig.track(script)
        [call] = await rig.settled(script)
        assert call.recordings[0].status == RecordingStatus.ARCHIVE_FAILED
    assert s3_server.keys(bucket) == []
    check_clean(s3_server, bucket)


async def test_a_missing_bucket_pauses_without_spending_attempts(
        tmp_path: Path, s3_server: S3Server) -> None:
    """No bucket: archiving pauses (status says why), no attempt is spent; it resumes once
    the bucket exists and the recording is archived."""
    bucket = f"later-{tmp_path.name[-20:].lower().replace('_', '-')}"
    target = S3Target(s3_config(s3_server, bucket), stale_after=3600)
    async with archive_rig(tmp_path, target=target, start_archiver=False) as rig:
        script = ended_call(rig, "envoy")
        with capture_logs() as logs:
            await rig.start_archiver()
            await rig.track(script)
            await wait_paused(rig)
        state = await rig.store.archive_state()
        assert state.paused_reason is not None and "NoSuchBucket" in state.paused_reason
        assert "PAUSED" in rig.archiver.describe()
        paused = [e for e in logs if e["event"] == "archive.paused"]
        assert paused and paused[0]["target"] == f"s3://{bucket}/rec"
        await anyio.sleep(0.5)  # a few probe rounds while paused
        info = await rig.store.download_info("envoy", script.call_id)
        assert all(i.attempts == 0 for i in info.values())
        s3_server.client.create_bucket(Bucket=bucket)
        [call] = await rig.settled(script)
        check_in_bucket(s3_server, bucket, call)
        assert (await rig.store.archive_state()).paused_reason is None


async def wait_paused(rig: Rig) -> None:
    """Until the archiver has paused."""
    with anyio.fail_after(15):
        while rig.archiver.stats.paused is None:  # noqa: ASYNC110 - stats have no event
            await anyio.sleep(0.05)


async def test_an_object_already_in_the_bucket_is_adopted_without_a_download(
        tmp_path: Path, s3_server: S3Server) -> None:
    """A verified object at the final key (a crash before the commit) is archived as it is."""
    bucket = s3_server.bucket()
    target = S3Target(s3_config(s3_server, bucket), stale_after=3600)
    async with archive_rig(tmp_path, target=target, start_archiver=False) as rig:
        script: CallScript = ended_call(rig, "envoy")
        await rig.track(script)
        # What a run killed between its upload and its database commit left behind.
        first = S3Target(s3_config(s3_server, bucket), stale_after=3600)
        upload = await first.start("x")
        await upload.write([content_bytes(script.recordings[0])])
        final = layout.final_path("envoy", script.call_id, script.call_id, "audio/mp4")
        await upload.commit(final, "audio/mp4")
        await first.close()
        with capture_logs() as logs:
            await rig.start_archiver()
            [call] = await rig.settled(script)
        check_in_bucket(s3_server, bucket, call)
        assert any(e["event"] == "recording.adopted" for e in logs)
        assert rig.object_gets(script) == 0
