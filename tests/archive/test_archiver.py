"""The archiver with the real scheduler, store and adapters, against the simulator over HTTP."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from tests.archive.faults import FaultyOps
from tests.archive.rig import Rig, archive_rig
from tests.webhooks.schema import check_body
from worker.model import RecordingStatus, TrackedCall
from worker.simulator import Fault, RecordingScript, content_bytes, expected_sha256
from worker.simulator.world import CallScript

pytestmark = pytest.mark.anyio

KIB = 1024


def ended_call(rig: Rig, provider: str, *sizes: int, **script: object) -> CallScript:
    """A call that is over at once, its recordings ready a moment later."""
    recordings = [RecordingScript(ready_after=0.1, size=size) for size in sizes or (200 * KIB,)]
    return rig.sim.world.add_call(provider, starts_after=0, lasts=0.1, recordings=recordings,
                                  **script)  # type: ignore[arg-type]


async def event_types(rig: Rig, script: CallScript) -> list[str]:
    return [e.type for e in await rig.events(script)]


async def check_outbox_order(rig: Rig, script: CallScript) -> None:
    """call.completed is last, after every recording's archive outcome; bodies as published."""
    for event in await rig.events(script):
        check_body(event.body)
    types = await event_types(rig, script)
    assert types[-1] == "call.completed", types
    outcomes = [i for i, t in enumerate(types)
                if t in ("recording.archived", "recording.archive_failed")]
    assert len(outcomes) == len(script.recordings), types


def check_archived(rig: Rig, call: TrackedCall, script: CallScript) -> None:
    """Every recording is on disk, complete, where the call says, with the digest it says."""
    assert len(call.recordings) == len(script.recordings)
    for rec in call.recordings:
        expected = scripted(script, rec.id)
        assert rec.status == RecordingStatus.ARCHIVED, rec
        assert rec.archive_path is not None
        path = rig.archive_dir / rec.archive_path
        assert path.stat().st_size == rec.archive_size == expected.size
        assert rec.archive_sha256 == expected_sha256(expected)
    assert rig.partials() == []


def scripted(script: CallScript, recording_id: str) -> RecordingScript:
    """The simulated recording behind one of ours (Ultravox and Envoy name it by the call)."""
    if script.provider != "apifycloud":
        return script.recordings[0]
    found = script.recording(recording_id)
    assert found is not None
    return found


async def wait_for(check: object, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while True:
            result = check() if callable(check) else check
            if hasattr(result, "__await__"):
                result = await result
            if result:
                return
            await anyio.sleep(0.05)


async def available(rig: Rig, script: CallScript) -> bool:
    call = await rig.call(script)
    return bool(call.recordings) and all(r.status == RecordingStatus.AVAILABLE
                                         for r in call.recordings)


async def test_every_provider_is_archived_with_its_digest(tmp_path: Path) -> None:
    """Ultravox (redirect and direct), Envoy and apifycloud recordings all land, verified, once."""
    async with archive_rig(tmp_path) as rig:
        scripts = [ended_call(rig, "ultravox"), ended_call(rig, "envoy"),
                   ended_call(rig, "apifycloud", 100 * KIB, 150 * KIB),
                   ended_call(rig, "ultravox", direct_recording=True)]
        await rig.track(*scripts)
        calls = await rig.settled(*scripts)
        for call, script in zip(calls, scripts, strict=True):
            check_archived(rig, call, script)
            await check_outbox_order(rig, script)
        assert [rig.object_gets(scripts[i], j) for i, j in ((0, 0), (1, 0), (2, 0), (2, 1))] == [
            1, 1, 1, 1]
        paths = sorted(r.archive_path or "" for c in calls for r in c.recordings)
        assert paths == sorted(f"{s.provider}/{s.call_id}/{rid}{ext}" for s, rid, ext in [
            (scripts[0], scripts[0].call_id, ".wav"), (scripts[1], scripts[1].call_id, ".m4a"),
            (scripts[2], scripts[2].recordings[0].id, ".mp4"),
            (scripts[2], scripts[2].recordings[1].id, ".mp4"),
            (scripts[3], scripts[3].call_id, ".wav")])
        event = next(e for e in await rig.events(scripts[1]) if e.type == "recording.archived")
        archive = json.loads(event.body)["data"]["recording"]["archive"]
        path = calls[1].recordings[0].archive_path
        assert archive == {"path": path, "size": 200 * KIB,
                           "sha256": expected_sha256(scripts[1].recordings[0]),
                           "url": f"file://{rig.archive_dir.absolute()}/{path}"}


async def test_an_expired_link_is_refreshed_and_the_file_arrives(tmp_path: Path) -> None:
    """A stored link past its expiry is replaced before fetching: no request is wasted on it."""
    async with archive_rig(tmp_path, link_ttl=2, start_archiver=False,
                           archive={"refresh_margin": 0.5}) as rig:
        script = ended_call(rig, "apifycloud")
        await rig.track(script)
        await wait_for(lambda: available(rig, script))
        stored = (await rig.call(script)).recordings[0]
        assert stored.url_expires_at is not None
        await anyio.sleep(max(0.0, stored.url_expires_at - time.time()) + 0.1)
        with capture_logs() as logs:
            await rig.start_archiver()
            [call] = await rig.settled(script)
        check_archived(rig, call, script)
        assert rig.object_gets(script) == 1
        assert "recording.link_refreshed" in [e["event"] for e in logs]


async def test_a_403_from_storage_means_a_fresh_link_not_a_failure(tmp_path: Path) -> None:
    """A revoked link answers 403; the archiver asks for a new one and spends no attempt."""
    async with archive_rig(tmp_path, start_archiver=False) as rig:
        script = ended_call(rig, "envoy")
        await rig.track(script)
        await wait_for(lambda: available(rig, script))
        path = rig.sim.signer.object_path("envoy", script.call_id, script.recordings[0])
        rig.sim.signer.revoke(path.encode())
        await rig.start_archiver()
        [call] = await rig.settled(script)
        check_archived(rig, call, script)
        assert rig.object_gets(script) == 2
        info = await rig.store.download_info("envoy", script.call_id)
        assert info[script.call_id].attempts == 0


async def test_a_link_that_expires_mid_download_is_resumed_on_a_fresh_one(
        tmp_path: Path) -> None:
    """Cut and revoked half-way: refreshed, resumed from the same byte, archived whole."""
    async with archive_rig(tmp_path) as rig:
        rig.sim.faults["files"].add(Fault.EXPIRE_MID_DOWNLOAD, after=300 * KIB, stall=0.1,
                                    count=1)
        script = ended_call(rig, "ultravox", 1024 * KIB)
        with capture_logs() as logs:
            await rig.track(script)
            [call] = await rig.settled(script)
        check_archived(rig, call, script)
        assert rig.object_gets(script) == 3  # the cut one, the 403, the resume
        events = [e["event"] for e in logs]
        assert "recording.link_refreshed" in events
        assert "recording.download_restarted" not in events
        assert "recording.download_failed" not in events


async def test_a_truncated_body_is_resumed_and_never_archived_short(tmp_path: Path) -> None:
    """One cut is resumed with Range; a body cut every time ends archive_failed, no file."""
    async with archive_rig(tmp_path, archive={"max_attempts": 2}) as rig:
        rig.sim.faults["files"].add(Fault.TRUNCATE_BODY, after=50 * KIB, count=1)
        once = ended_call(rig, "envoy")
        await rig.track(once)
        [call] = await rig.settled(once)
        check_archived(rig, call, once)
        assert rig.object_gets(once) == 2

        rig.sim.faults["files"].add(Fault.TRUNCATE_BODY, after=10 * KIB)
        always = ended_call(rig, "envoy", 300 * KIB)
        await rig.track(always)
        [failed] = await rig.settled(always)
        rec = failed.recordings[0]
        assert rec.status == RecordingStatus.ARCHIVE_FAILED
        assert rec.reason is not None and "connection cut" in rec.reason
        assert "gave up after 2 attempts" in rec.reason
        assert len(rig.files()) == 1 and rig.partials() == []
        await check_outbox_order(rig, always)


@pytest.mark.parametrize(("fault", "params", "reason"), [
    (Fault.XML_ERROR_200, {}, "application/xml"),
    (Fault.WRONG_CONTENT_TYPE, {"content_type": "text/html; charset=utf-8"}, "text/html"),
])
async def test_an_error_body_is_rejected_and_retried(tmp_path: Path, fault: Fault,
                                                     params: dict[str, object],
                                                     reason: str) -> None:
    """A 200 that is not the recording spends one attempt; the retry archives the real bytes."""
    async with archive_rig(tmp_path) as rig:
        rig.sim.faults["files"].add(fault, count=1, **params)
        script = ended_call(rig, "apifycloud")
        with capture_logs() as logs:
            await rig.track(script)
            [call] = await rig.settled(script)
        check_archived(rig, call, script)
        failed = [e for e in logs if e["event"] == "recording.download_failed"]
        assert len(failed) == 1 and reason in failed[0]["reason"]
        assert failed[0]["attempt"] == 1


async def test_an_error_body_every_time_ends_in_archive_failed(tmp_path: Path) -> None:
    """After max_attempts the recording is archive_failed with the last reason, and no file."""
    async with archive_rig(tmp_path, archive={"max_attempts": 3}) as rig:
        rig.sim.faults["files"].add(Fault.XML_ERROR_200)
        script = ended_call(rig, "apifycloud")
        await rig.track(script)
        [call] = await rig.settled(script)
        rec = call.recordings[0]
        assert rec.status == RecordingStatus.ARCHIVE_FAILED
        assert rec.reason == ("storage answered 200 with application/xml, not a recording "
                              "(gave up after 3 attempts)")
        assert rig.object_gets(script) == 3
        assert rig.files() == [] and rig.partials() == []
        await check_outbox_order(rig, script)
        body = next(json.loads(e.body) for e in await rig.events(script)
                    if e.type == "recording.archive_failed")
        assert body["data"]["recording"]["reason"] == rec.reason


HOSTILE_IDS = ["..", ".", ".partial", "..%2f..%2fetc", "a\x00b", "x" * 500,
               "\uff0e\uff0e\uff0fetc\uff0fpasswd", "\u202egnp.exe", "CON", "../x",
               "/etc/passwd", "ABC", "abc"]


def _outside(tmp_path: Path, archive: Path) -> list[str]:
    """Every file under tmp_path that is neither in the archive nor the daemon's own."""
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                  if p.is_file() and archive not in p.parents
                  and not p.name.startswith("callwatch."))


async def test_hostile_ids_stay_inside_the_archive(tmp_path: Path) -> None:
    """Ids made to escape or collide give distinct files inside archive_dir and nothing else."""
    async with archive_rig(tmp_path) as rig:
        recordings = [RecordingScript(id=rid, ready_after=0.1, size=8 * KIB + i)
                      for i, rid in enumerate(HOSTILE_IDS)]
        script = rig.sim.world.add_call("apifycloud", starts_after=0, lasts=0.1,
                                        recordings=recordings)
        await rig.track(script)
        [call] = await rig.settled(script, timeout=30)
        archived = [r for r in call.recordings if r.status == RecordingStatus.ARCHIVED]
        # The simulated bucket cannot serve ids with '/' (they are not one key): those fail.
        assert {r.id for r in call.recordings if r not in archived} == {"../x", "/etc/passwd"}
        root = rig.archive_dir.resolve()
        paths = [(rig.archive_dir / (r.archive_path or "")).resolve() for r in archived]
        assert all(root in p.parents and p.is_file() for p in paths)
        assert len(set(paths)) == len(archived) == len(HOSTILE_IDS) - 2
        by_id = {r.id: r for r in script.recordings}
        for rec in archived:
            assert rec.archive_sha256 == expected_sha256(by_id[rec.id])
        assert _outside(tmp_path, rig.archive_dir) == []


async def test_a_full_disk_pauses_archiving_and_it_resumes_later(tmp_path: Path) -> None:
    """ENOSPC: no final file, no attempt spent, paused (and said so); space back: archived."""
    ops = FaultyOps(errno.ENOSPC, allow=64 * KIB)
    async with archive_rig(tmp_path, ops=ops) as rig:
        ops.failing = True
        script = ended_call(rig, "envoy", 512 * KIB)
        with capture_logs() as logs:
            await rig.track(script)
            await wait_for(lambda: rig.archiver.stats.paused is not None)
            await anyio.sleep(0.5)  # a few probes, all failing
        assert rig.archiver.stats.paused == "disk full (ENOSPC)"
        assert rig.archiver.describe() == "archive PAUSED (disk full (ENOSPC))"
        assert (await rig.store.archive_state()).paused_reason == "disk full (ENOSPC)"
        assert [e["event"] for e in logs].count("archive.paused") == 1
        assert rig.files() == [] and rig.partials() == []
        assert (await rig.call(script)).terminal is None
        info = await rig.store.download_info("envoy", script.call_id)
        assert info[script.call_id].attempts == 0
        assert info[script.call_id].last_error == "paused: disk full (ENOSPC)"
        ops.failing = False
        [call] = await rig.settled(script)
        check_archived(rig, call, script)
        assert (await rig.store.archive_state()).paused_reason is None
        assert rig.archiver.stats.paused is None


def leave_final_file(rig: Rig, script: CallScript, ext: str, data: bytes) -> Path:
    """A file at the recording's final name, as an attempt killed before its commit leaves it."""
    path = rig.archive_dir / script.provider / script.call_id / f"{script.call_id}{ext}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("provider", "ext"), [("envoy", ".m4a"), ("ultravox", ".wav")])
async def test_a_file_placed_before_a_crash_is_adopted_without_a_download(
        tmp_path: Path, provider: str, ext: str) -> None:
    """Killed between rename and commit: the next attempt takes the file, asks nobody for it.

    The provider has forgotten the recording and its link is revoked meanwhile: before adoption
    this ended archive_failed, with the intact file left behind as a stray.
    """
    async with archive_rig(tmp_path, start_archiver=False) as rig:
        script = ended_call(rig, provider)
        await rig.track(script)
        await wait_for(lambda: available(rig, script))
        recording = script.recordings[0]
        path = leave_final_file(rig, script, ext, content_bytes(recording))
        rig.sim.signer.revoke(rig.sim.signer.object_path(provider, script.call_id,
                                                         recording).encode())
        rig.sim.world.add(dataclasses.replace(script, vanishes_after=0))
        with capture_logs() as logs:
            await rig.start_archiver()
            [call] = await rig.settled(script)
        check_archived(rig, call, script)
        rec = call.recordings[0]
        assert rec.archive_path == f"{provider}/{script.call_id}/{script.call_id}{ext}"
        assert rig.files() == [path]
        assert rig.object_gets(script) == 0
        adopted = [e for e in logs if e["event"] == "recording.adopted"]
        assert len(adopted) == 1 and adopted[0]["path"] == rec.archive_path
        assert adopted[0]["size"] == recording.size
        assert "earlier attempt" in adopted[0]["reason"]
        assert "recording.download_started" not in [e["event"] for e in logs]
        await check_outbox_order(rig, script)
        event = next(e for e in await rig.events(script) if e.type == "recording.archived")
        assert json.loads(event.body)["data"]["recording"]["archive"] == {
            "path": rec.archive_path, "size": recording.size,
            "sha256": expected_sha256(recording),
            "url": f"file://{rig.archive_dir.absolute()}/{rec.archive_path}"}


async def test_a_file_of_the_wrong_size_is_not_adopted(tmp_path: Path) -> None:
    """Envoy announces the size; a file of another size is downloaded over, not trusted."""
    async with archive_rig(tmp_path, start_archiver=False) as rig:
        script = ended_call(rig, "envoy")
        await rig.track(script)
        await wait_for(lambda: available(rig, script))
        recording = script.recordings[0]
        assert (await rig.call(script)).recordings[0].size == recording.size
        path = leave_final_file(rig, script, ".m4a", content_bytes(recording, 0, 100 * KIB))
        with capture_logs() as logs:
            await rig.start_archiver()
            [call] = await rig.settled(script)
        check_archived(rig, call, script)
        assert call.recordings[0].archive_path == path.relative_to(rig.archive_dir).as_posix()
        assert rig.files() == [path] and path.read_bytes() == content_bytes(recording)
        assert rig.object_gets(script) == 1
        skipped = [e for e in logs if e["event"] == "recording.adopt_skipped"]
        assert len(skipped) == 1
        assert (skipped[0]["size"], skipped[0]["expected_size"]) == (100 * KIB, recording.size)
        assert "recording.adopted" not in [e["event"] for e in logs]


async def test_the_same_recording_in_many_snapshots_is_downloaded_once(tmp_path: Path) -> None:
    """Polls keep handing out fresh links while a slow download runs: still one GET."""
    async with archive_rig(tmp_path) as rig:
        script = rig.sim.world.add_call("apifycloud", starts_after=0, lasts=0.1, recordings=[
            RecordingScript(ready_after=0.1, size=100 * KIB),
            RecordingScript(ready_after=2.0, size=100 * KIB)])
        slow = rig.sim.signer.object_path("apifycloud", script.call_id, script.recordings[0])
        rig.sim.faults["files"].add(Fault.SLOW, delay=1.0, match=slow, count=1)
        await rig.track(script)
        [call] = await rig.settled(script)
        check_archived(rig, call, script)
        assert rig.scheduler.stats.polls["ok"] >= 8  # every one a snapshot with a fresh link
        assert (rig.object_gets(script, 0), rig.object_gets(script, 1)) == (1, 1)


async def test_a_recording_over_max_size_is_refused(tmp_path: Path) -> None:
    """Over max_size: archive_failed with the reason, from the provider's size or the headers."""
    async with archive_rig(tmp_path, archive={"max_size": 100 * KIB}) as rig:
        told = ended_call(rig, "envoy", 200 * KIB)  # Envoy says file_size_bytes
        untold = ended_call(rig, "apifycloud", 200 * KIB)  # only Content-Length says
        await rig.track(told, untold)
        calls = await rig.settled(told, untold)
        for call in calls:
            rec = call.recordings[0]
            assert rec.status == RecordingStatus.ARCHIVE_FAILED
            assert rec.reason is not None and "over max_size (102400)" in rec.reason
        assert (rig.object_gets(told), rig.object_gets(untold)) == (0, 1)
        assert rig.files() == [] and rig.partials() == []


async def test_a_recording_the_provider_no_longer_has_fails_at_once(tmp_path: Path) -> None:
    """Storage says 404 and the provider has no fresh link: archive_failed, no retries."""
    async with archive_rig(tmp_path, start_archiver=False) as rig:
        script = ended_call(rig, "envoy")
        await rig.track(script)
        await wait_for(lambda: available(rig, script))
        rig.sim.world.add(dataclasses.replace(script, vanishes_after=0))
        await rig.start_archiver()
        [call] = await rig.settled(script)
        rec = call.recordings[0]
        assert rec.status == RecordingStatus.ARCHIVE_FAILED
        assert rec.reason == "the provider no longer has the recording"
        assert rig.object_gets(script) == 1
        await check_outbox_order(rig, script)


async def test_server_errors_spend_the_attempts_then_give_up(tmp_path: Path) -> None:
    """Each 500 is one attempt, retried after a back-off, until max_attempts."""
    async with archive_rig(tmp_path, archive={"max_attempts": 3}) as rig:
        rig.sim.faults["files"].add(Fault.SERVER_ERROR, status=500)
        script = ended_call(rig, "envoy")
        with capture_logs() as logs:
            await rig.track(script)
            [call] = await rig.settled(script)
        assert call.recordings[0].reason == "HTTP 500 from storage (gave up after 3 attempts)"
        failed = [e for e in logs if e["event"] == "recording.download_failed"]
        assert [e["attempt"] for e in failed] == [1, 2]
        assert all(e["retry_in"] > 0 for e in failed)
        assert [e["event"] for e in logs].count("recording.archive_failed") == 1


async def test_stop_lets_a_download_in_flight_finish(tmp_path: Path) -> None:
    """stop() claims nothing new, but the running download completes and is settled."""
    async with archive_rig(tmp_path, start_archiver=False) as rig:
        script = ended_call(rig, "envoy")
        rig.sim.faults["files"].add(Fault.SLOW, delay=0.5, count=1)
        await rig.track(script)
        await wait_for(lambda: available(rig, script))
        async with anyio.create_task_group() as tg:
            await tg.start(rig.archiver.run)
            await wait_for(lambda: rig.archiver.stats.in_flight == 1)
            rig.archiver.stop()
        [call] = await rig.settled(script, timeout=1)
        check_archived(rig, call, script)


async def test_the_loop_reports_progress_while_idle(tmp_path: Path) -> None:
    """An idle archiver still goes round its loop, so the watchdog keeps vouching for it."""
    async with archive_rig(tmp_path) as rig:
        first = rig.archiver.progress()
        await anyio.sleep(0.3)  # the rig's idle_wait is 0.1 s
        assert rig.archiver.progress() > first
        assert rig.archiver.describe() == "0 downloads in flight"


async def test_logs_never_carry_a_signed_query(tmp_path: Path) -> None:
    """Download logs name host and path only: the signature of a link is a credential."""
    async with archive_rig(tmp_path) as rig:
        rig.sim.faults["files"].add(Fault.TRUNCATE_BODY, after=10 * KIB, count=1)
        script = ended_call(rig, "apifycloud")
        with capture_logs() as logs:
            await rig.track(script)
            await rig.settled(script)
        text = json.dumps([{k: str(v) for k, v in e.items()} for e in logs])
        assert "recording.download_started" in text
        assert "X-Amz-Signature" not in text and "X-Amz-Credential" not in text


def _mount(*args: str) -> bool:
    try:
        done = subprocess.run(["mount", *args], capture_output=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs where the archive goes; skipped where mounting is not allowed."""
    target = tmp_path / "recordings"
    target.mkdir()
    if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", "size=1m,mode=0750", "tmpfs",
                                       str(target)):
        pytest.skip("mounting a tmpfs needs root (or is not permitted here)")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False, timeout=10)


async def test_a_really_full_file_system_pauses_and_resumes(tmp_path: Path,
                                                            small_tmpfs: Path) -> None:
    """On a 1 MiB tmpfs a 2 MiB recording pauses archiving; grown to 8 MiB it is archived."""
    async with archive_rig(tmp_path) as rig:
        script = ended_call(rig, "envoy", 2048 * KIB)
        await rig.track(script)
        await wait_for(lambda: rig.archiver.stats.paused is not None)
        assert rig.archiver.stats.paused == "disk full (ENOSPC)"
        assert rig.files() == []
        assert _mount("-o", "remount,size=8m", str(small_tmpfs))
        [call] = await rig.settled(script)
        check_archived(rig, call, script)
        info = await rig.store.download_info("envoy", script.call_id)
        assert info[script.call_id].attempts == 0
