"""The download queue on every backend: order, leases, settling, recovery."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import pytest

from tests.backends import Opener, sqlite_only
from worker.config import TrackingConfig
from worker.model import CallStatus, DownloadSource, RecordingSnapshot, RecordingStatus, Snapshot
from worker.reconcile import Archived, ArchiveFailed, Policy, on_poll
from worker.store.base import NewCall, PollApplied

pytestmark = pytest.mark.anyio

NOW = 1_800_000_000.0
POLICY = Policy(tracking=TrackingConfig(), archiving=True)
ALL = ["apifycloud", "envoy", "ultravox"]


@pytest.fixture
async def store(open_store: Opener) -> Any:
    return await open_store(owner=f"{socket.gethostname()}:{os.getpid()}:aaaa")


async def ended_with(store: Any, call_id: str,
                     recordings: list[tuple[str, float | None]],
                     provider: str = "apifycloud") -> None:
    """Track a call and apply one poll saying it ended with these available recordings."""
    await store.track(NewCall(provider=provider, call_id=call_id), NOW)
    claimed = [c for c in await store.claim_due_calls(provider, NOW, 100) if c.call_id == call_id]
    snap = Snapshot(status=CallStatus.ENDED, provider_status="ended", ended_at=NOW,
                    recordings=tuple(RecordingSnapshot(id=rid, status=RecordingStatus.AVAILABLE,
                                                       url=f"https://s.example/{rid}?sig=1",
                                                       url_expires_at=exp, size=10)
                                     for rid, exp in recordings))
    decision = on_poll(claimed[0], snap, NOW, POLICY)
    await store.apply_poll_results([PollApplied(decision=decision, result=snap)], NOW)


async def test_jobs_come_earliest_expiry_first_unknown_first(store: Any) -> None:
    """Claim order is the links' expiry, with an unknown expiry treated as the most urgent."""
    await ended_with(store, "c1", [("late", NOW + 3000), ("soon", NOW + 60)])
    await ended_with(store, "c2", [("unknown", None), ("middle", NOW + 600)])
    jobs = await store.claim_due_downloads(ALL, NOW, 10)
    assert [j.recording_id for j in jobs] == ["unknown", "soon", "middle", "late"]
    assert jobs[1].url == "https://s.example/soon?sig=1" and jobs[1].size == 10


async def test_a_claimed_job_is_not_claimed_again(store: Any) -> None:
    """A lease keeps a job to one worker until released or expired."""
    await ended_with(store, "c1", [("r1", None), ("r2", None)])
    first = await store.claim_due_downloads(ALL, NOW, 1)
    second = await store.claim_due_downloads(ALL, NOW, 10)
    assert [j.recording_id for j in first] == ["r1"]
    assert [j.recording_id for j in second] == ["r2"]
    assert await store.claim_due_downloads(ALL, NOW, 10) == []
    assert [j.recording_id for j in await store.claim_due_downloads(ALL, NOW + 301, 10)] == [
        "r1", "r2"]


async def test_only_configured_providers_and_tracked_calls_give_jobs(store: Any) -> None:
    """Recordings of other providers, or of calls whose tracking is over, are not jobs."""
    await ended_with(store, "c1", [("r1", None)], provider="envoy")
    assert await store.claim_due_downloads(["apifycloud"], NOW, 10) == []
    assert await store.claim_due_downloads([], NOW, 10) == []
    [job] = await store.claim_due_downloads(["envoy"], NOW, 10)
    assert await store.apply_archive_result(job, ArchiveFailed(reason="x"), NOW, POLICY)
    assert await store.claim_due_downloads(ALL, NOW + 1000, 10) == []


async def test_a_failure_reschedules_and_counts_only_when_told(store: Any) -> None:
    """A counted failure spends an attempt; a pause releases the job without spending one."""
    await ended_with(store, "c1", [("r1", None)])
    [job] = await store.claim_due_downloads(ALL, NOW, 10)
    await store.record_download_failure(job, reason="HTTP 500", retry_at=NOW + 30, counted=True)
    assert await store.claim_due_downloads(ALL, NOW + 29, 10) == []
    assert await store.next_download_due_at(ALL) == NOW + 30
    [job] = await store.claim_due_downloads(ALL, NOW + 30, 10)
    assert (job.attempts, job.last_error) == (1, "HTTP 500")
    await store.record_download_failure(job, reason="paused: disk full", retry_at=NOW + 31,
                                        counted=False)
    info = (await store.download_info("apifycloud", "c1"))["r1"]
    assert (info.attempts, info.last_error, info.next_attempt_at, info.in_progress) == (
        1, "paused: disk full", NOW + 31, False)


async def test_archiving_the_last_recording_completes_the_call_in_one_go(
        store: Any) -> None:
    """recording.archived and call.completed are written together, in that order."""
    await ended_with(store, "c1", [("r1", None), ("r2", None)])
    jobs = await store.claim_due_downloads(ALL, NOW, 10)
    for job in jobs:
        outcome = Archived(path=f"apifycloud/c1/{job.recording_id}.mp4", size=10, sha256="ab")
        assert await store.apply_archive_result(job, outcome, NOW + 1, POLICY)
    types = [e.type for e in await store.call_events("apifycloud", "c1")]
    assert types[-3:] == ["recording.archived", "recording.archived", "call.completed"]
    call = await store.get_call("apifycloud", "c1")
    assert call is not None and call.terminal is not None
    assert call.recordings[0].archive_path == "apifycloud/c1/r1.mp4"
    completed = json.loads((await store.call_events("apifycloud", "c1"))[-1].body)
    assert [r["status"] for r in completed["data"]["recordings"]] == ["archived", "archived"]


async def test_a_call_held_by_a_poll_is_settled_after_it(store: Any) -> None:
    """While a poll leases the call, the archive result waits (the poll would overwrite it)."""
    await ended_with(store, "c1", [("r1", None)])
    [job] = await store.claim_due_downloads(ALL, NOW, 10)
    [polled] = await store.claim_due_calls("apifycloud", NOW + 10_000, 10)
    outcome = Archived(path="p", size=10, sha256="ab")
    assert not await store.apply_archive_result(job, outcome, NOW + 10_000, POLICY)
    assert [e.type for e in await store.call_events("apifycloud", "c1")][-1] != (
        "recording.archived")
    await store.apply_poll_results([PollApplied(decision=on_poll(
        polled, Snapshot(status=CallStatus.ENDED, provider_status="ended"), NOW + 10_000,
        POLICY))], NOW + 10_000)
    assert await store.apply_archive_result(job, outcome, NOW + 10_001, POLICY)
    call = await store.get_call("apifycloud", "c1")
    assert call is not None and call.recordings[0].status == RecordingStatus.ARCHIVED


async def test_a_fresh_link_is_kept_without_its_headers(store: Any) -> None:
    """update_recording_link stores URL and expiry; the API key that came with it is not kept."""
    await ended_with(store, "c1", [("r1", NOW + 10)])
    [job] = await store.claim_due_downloads(ALL, NOW, 10)
    source = DownloadSource(url="https://api.example/rec", headers={"X-API-Key": "sk-live-1"},
                            expires_at=NOW + 500, content_type="video/mp4")
    await store.update_recording_link(job, source)
    await store.release_downloads()
    [again] = await store.claim_due_downloads(ALL, NOW, 10)
    assert (again.url, again.url_expires_at, again.content_type) == (
        "https://api.example/rec", NOW + 500, "video/mp4")
    sqlite_only(store)
    dump = "\n".join(p.read_bytes().decode("latin-1")
                     for p in store.path.parent.iterdir() if p.name.startswith("callwatch.db"))
    assert "sk-live-1" not in dump


async def test_leases_of_a_dead_process_are_recovered(store: Any,
                                                      open_store: Opener) -> None:
    """Jobs leased by a process that no longer runs come back at the next start."""
    await ended_with(store, "c1", [("r1", None)])
    dead = await open_store(owner=f"{socket.gethostname()}:999999999:dead")
    assert len(await dead.claim_due_downloads(ALL, NOW, 10)) == 1
    await dead.close()
    assert await store.claim_due_downloads(ALL, NOW, 10) == []
    assert await store.recover_downloads() == 1
    assert len(await store.claim_due_downloads(ALL, NOW, 10)) == 1
    assert await store.extend_download_leases(NOW + 100) == 1


async def test_the_pause_is_recorded_for_status(store: Any) -> None:
    """archive_state says why archiving is paused and since when, and forgets it on resume."""
    assert (await store.archive_state()).paused_reason is None
    await ended_with(store, "c1", [("r1", None), ("r2", None)])
    await store.set_archive_paused("disk full (ENOSPC)", NOW)
    await store.set_archive_paused("disk full (ENOSPC)", NOW + 5)
    state = await store.archive_state()
    assert (state.paused_reason, state.paused_since, state.pending) == (
        "disk full (ENOSPC)", NOW, 2)
    await store.set_archive_paused(None, NOW + 9)
    state = await store.archive_state()
    assert (state.paused_reason, state.paused_since) == (None, None)
