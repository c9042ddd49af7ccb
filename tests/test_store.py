"""The Store contract on every backend: a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.backends import Opener, sqlite_only
from worker.config import TrackingConfig
from worker.model import CallStatus, RecordingSnapshot, RecordingStatus, Snapshot
from worker.reconcile import Policy, on_poll
from worker.store.base import NewCall, PermanentStoreError, PollApplied
from worker.store.sqlite import SCHEMA_VERSION, SQLiteStore, _owner_is_dead

pytestmark = pytest.mark.anyio
T0 = 1_800_000_000.0
POLICY = Policy(tracking=TrackingConfig(), archiving=False)


@pytest.fixture
async def store(open_store: Opener) -> Any:
    return await open_store()


async def test_migrations_from_empty_and_rerun(tmp_path: Path) -> None:
    """A new file gets the whole schema; opening it again applies nothing and keeps the data."""
    path = tmp_path / "db.sqlite"
    first = await SQLiteStore.open(path)
    assert await first.schema_version() == SCHEMA_VERSION
    await first.track(NewCall(provider="envoy", call_id="call_1"), T0)
    await first.close()
    second = await SQLiteStore.open(path)
    assert await second.schema_version() == SCHEMA_VERSION
    assert await second.get_call("envoy", "call_1") is not None
    assert await second.integrity_check() == "ok"
    await second.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database from a newer callwatch is not silently downgraded."""
    path = tmp_path / "db.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    from worker.store.base import StoreError

    with pytest.raises(StoreError, match="newer"):
        await SQLiteStore.open(path)


async def test_unusable_file_is_a_clear_error(tmp_path: Path) -> None:
    """A file that is not a database gives a StoreError naming it, not a traceback."""
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not sqlite" * 100)
    from worker.store.base import StoreError

    with pytest.raises(StoreError, match=r"garbage\.db"):
        await SQLiteStore.open(path)


async def test_track_is_idempotent(store: Any) -> None:
    """Tracking the same call twice changes nothing the second time."""
    assert await store.track(NewCall(provider="ultravox", call_id="a", metadata={"k": 1}), T0)
    assert not await store.track(NewCall(provider="ultravox", call_id="a", metadata={"k": 2}),
                                 T0 + 5)
    call = await store.get_call("ultravox", "a")
    assert call is not None and call.metadata == {"k": 1} and call.tracked_at == T0


async def test_claim_leases_due_calls_once(store: Any) -> None:
    """A claimed call is not claimed again until its result is applied."""
    for i in range(5):
        await store.track(NewCall(provider="ultravox", call_id=f"c{i}"), T0 + i)
    await store.track(NewCall(provider="envoy", call_id="e"), T0)
    first = await store.claim_due_calls("ultravox", T0 + 10, 3)
    assert [c.call_id for c in first] == ["c0", "c1", "c2"]
    second = await store.claim_due_calls("ultravox", T0 + 10, 10)
    assert [c.call_id for c in second] == ["c3", "c4"]
    assert await store.claim_due_calls("ultravox", T0 + 10, 10) == []
    assert await store.next_due_at("ultravox") is None  # all leased
    assert await store.next_due_at("envoy") == T0


async def test_apply_writes_state_and_events_together(store: Any) -> None:
    """A decision's new state and its events land in one transaction, events in order."""
    await store.track(NewCall(provider="ultravox", call_id="a"), T0)
    [call] = await store.claim_due_calls("ultravox", T0, 1)
    snap = Snapshot(status=CallStatus.ENDED, provider_status="ended", started_at=T0,
                    ended_at=T0 + 1, recordings=(RecordingSnapshot(
                        id="r", status=RecordingStatus.AVAILABLE, url="https://x"),))
    decision = on_poll(call, snap, T0 + 2, POLICY)
    await store.apply_poll_results([PollApplied(decision=decision, result=snap)], T0 + 2)
    stored = await store.get_call("ultravox", "a")
    assert stored is not None
    assert stored.terminal is not None and stored.recordings[0].status == "available"
    events = await store.call_events("ultravox", "a")
    assert [e.type for e in events] == ["call.started", "call.ended", "recording.available",
                                        "call.completed"]
    assert await store.claim_due_calls("ultravox", T0 + 10_000, 10) == []  # terminal: no polls


async def test_same_event_is_never_written_twice(store: Any) -> None:
    """Replaying a decision (as after a crash between poll and commit) adds no duplicate."""
    await store.track(NewCall(provider="ultravox", call_id="a"), T0)
    [call] = await store.claim_due_calls("ultravox", T0, 1)
    snap = Snapshot(status=CallStatus.LIVE, provider_status="joined", started_at=T0)
    decision = on_poll(call, snap, T0 + 1, POLICY)
    await store.apply_poll_results([PollApplied(decision=decision, result=snap)], T0 + 1)
    await store.apply_poll_results([PollApplied(decision=decision, result=snap)], T0 + 1)
    assert [e.type for e in await store.call_events("ultravox", "a")] == ["call.started"]


async def test_failed_transaction_leaves_nothing(store: Any) -> None:
    """If writing the events fails, the call's new state is rolled back too."""
    sqlite_only(store)  # PostgreSQL writes only the calls it updated: see test_store_pg.py
    await store.track(NewCall(provider="ultravox", call_id="a"), T0)
    [call] = await store.claim_due_calls("ultravox", T0, 1)
    decision = on_poll(call, Snapshot(status=CallStatus.LIVE, provider_status="j"), T0 + 1,
                       POLICY)
    broken = decision.call.replace(pk=None)  # events cannot reference a call without a pk
    bad = type(decision)(call=broken, events=decision.events)
    with pytest.raises(PermanentStoreError):
        await store.apply_poll_results([PollApplied(decision=bad)], T0 + 1)
    stored = await store.get_call("ultravox", "a")
    assert stored is not None and stored.status == CallStatus.PENDING
    assert await store.call_events("ultravox", "a") == []


async def test_recover_releases_leases_of_dead_workers(tmp_path: Path) -> None:
    """After kill -9 the dead worker's leases are released at the next start, not in 2 min."""
    path = tmp_path / "db.sqlite"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    import socket

    first = await SQLiteStore.open(path, owner=f"{socket.gethostname()}:{dead.stdout.strip()}:x")
    await first.track(NewCall(provider="envoy", call_id="call_1"), T0)
    assert len(await first.claim_due_calls("envoy", T0, 5)) == 1
    await first.close()
    second = await SQLiteStore.open(path)
    assert await second.claim_due_calls("envoy", T0, 5) == []
    assert await second.recover() == 1
    assert len(await second.claim_due_calls("envoy", T0, 5)) == 1
    await second.close()


def test_owner_liveness() -> None:
    """Leases of live processes or other hosts are kept; malformed owners are left alone."""
    import os
    import socket

    host = socket.gethostname()
    assert not _owner_is_dead(f"{host}:1:x", host) or not Path("/proc/1").exists()
    assert not _owner_is_dead(f"otherhost:{os.getpid()}:x", host)
    assert not _owner_is_dead("garbage", host)
    assert _owner_is_dead(f"{host}:{os.getpid()}:other-nonce", host)


async def test_concurrent_track_from_another_process(tmp_path: Path) -> None:
    """`track` in other processes while this one claims and commits: nothing lost or broken."""
    path = tmp_path / "db.sqlite"
    store = await SQLiteStore.open(path)
    script = textwrap.dedent(f"""
        import anyio, sys
        from pathlib import Path
        from worker.store.sqlite import SQLiteStore
        from worker.store.base import NewCall
        async def main():
            s = await SQLiteStore.open(Path({str(path)!r}))
            for i in range(150):
                await s.track(NewCall(provider="envoy", call_id=f"call_{{sys.argv[1]}}_{{i}}"),
                              {T0} + i)
            await s.close()
        anyio.run(main)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(n)]) for n in range(3)]
    polled = 0
    while any(p.poll() is None for p in procs) or polled < 450:
        claimed = await store.claim_due_calls("envoy", T0 + 1000, 50)
        items = [PollApplied(decision=on_poll(c, Snapshot(status=CallStatus.LIVE,
                                                          provider_status="l"), T0 + 1000,
                                              POLICY)) for c in claimed]
        await store.apply_poll_results(items, T0 + 1000)
        polled += len(claimed)
        if not claimed:
            await anyio.sleep(0.01)
    assert [p.wait() for p in procs] == [0, 0, 0]
    counts = await store.counts()
    assert counts.calls_by_state == {("envoy", "live"): 450}
    assert counts.events == 450
    assert await store.integrity_check() == "ok"
    await store.close()


async def test_track_many_tracks_each_new_call_once_due_at_its_own_time(
        store: Any) -> None:
    """A bulk import tracks the new calls in one go, each due at its own time."""
    await store.track(NewCall(provider="envoy", call_id="old", metadata={"k": 1}), T0)
    added = await store.track_many([
        (NewCall(provider="envoy", call_id=f"n{i}"), T0 + 10 + i) for i in range(3)
    ] + [(NewCall(provider="envoy", call_id="old", metadata={"k": 2}), T0 + 99)])
    assert added == 3
    old = await store.get_call("envoy", "old")
    assert old is not None and old.metadata == {"k": 1} and old.next_poll_at == T0
    claimed = await store.claim_due_calls("envoy", T0 + 11.5, 10)
    assert [c.call_id for c in claimed] == ["old", "n0", "n1"]


async def test_claim_brings_the_recordings_of_calls_that_have_some(store: Any) -> None:
    """A claimed call comes with its recordings; one without any comes with none."""
    for call_id in ("with", "without"):
        await store.track(NewCall(provider="apifycloud", call_id=call_id), T0)
    for call in await store.claim_due_calls("apifycloud", T0, 2):
        recordings = (RecordingSnapshot(id="r1", status=RecordingStatus.PROCESSING),)
        snap = Snapshot(status=CallStatus.LIVE, provider_status="active", started_at=T0,
                        recordings=recordings if call.call_id == "with" else ())
        decision = on_poll(call, snap, T0 + 1, POLICY, 0.0)
        await store.apply_poll_results([PollApplied(decision=decision, result=snap)], T0 + 1)
    claimed = {c.call_id: c for c in await store.claim_due_calls("apifycloud", T0 + 10**5, 2)}
    assert [r.id for r in claimed["with"].recordings] == ["r1"]
    assert claimed["without"].recordings == ()


async def test_a_lone_poll_that_changes_nothing_is_still_persisted(store: Any) -> None:
    """A single result without events or recordings updates the call and frees its lease."""
    await store.track(NewCall(provider="ultravox", call_id="a"), T0)
    [call] = await store.claim_due_calls("ultravox", T0, 1)
    snap = Snapshot(status=CallStatus.PENDING, provider_status="created")
    decision = on_poll(call, snap, T0 + 1, POLICY, 0.5)
    assert decision.events == ()
    await store.apply_poll_results([PollApplied(decision=decision, result=snap)], T0 + 1)
    assert await store.next_due_at("ultravox") == decision.call.next_poll_at
    stored = await store.get_call("ultravox", "a")
    assert stored is not None and stored.last_polled_at == T0 + 1
    sqlite_only(store)
    with sqlite3.connect(store.path) as conn:
        snapshot = conn.execute("SELECT last_snapshot FROM calls").fetchone()[0]
    assert '"provider_status":"created"' in snapshot


def test_the_kept_snapshot_has_every_field_but_recording_urls() -> None:
    """snapshot_json (built by hand, for speed) matches the dataclass, minus the URLs."""
    import dataclasses
    import json

    from worker.store.rows import snapshot_json

    snap = Snapshot(status=CallStatus.ENDED, provider_status="ended", started_at=T0,
                    ended_at=T0 + 1.25, end_reason="hangup", recording_expected=True,
                    recordings=(RecordingSnapshot(id="r", status=RecordingStatus.AVAILABLE,
                                                  url="https://secret", url_expires_at=T0 + 300,
                                                  content_type="audio/wav", size=12),))
    expected = dataclasses.asdict(snap)
    for rec in expected["recordings"]:
        del rec["url"]
    assert json.loads(snapshot_json(snap)) == json.loads(json.dumps(expected, default=str))
    assert list(json.loads(snapshot_json(snap))) == list(expected)


async def test_cancelled_write_leaves_no_open_transaction(store: Any) -> None:
    """A write cancelled while BEGIN waits for another process's lock leaves nothing open.

    Found by the fault soak: the next write failed with "cannot start a transaction within
    a transaction" and took the daemon down.
    """
    sqlite_only(store)
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock

    async def release_later() -> None:
        await anyio.sleep(0.5)
        other.execute("COMMIT")

    async with anyio.create_task_group() as tg:
        tg.start_soon(release_later)
        with anyio.move_on_after(0.1):
            await store.track(NewCall(provider="envoy", call_id="call_cancelled"), T0)
    other.close()
    assert await store.track(NewCall(provider="envoy", call_id="call_next"), T0)
    assert await store.get_call("envoy", "call_next") is not None
