"""The scheduler against a real SQLite file, with a provider that answers at once."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from tests.e2e import harness
from worker.config import TrackingConfig
from worker.model import (
    CallStatus,
    DownloadSource,
    NotFound,
    PollFailed,
    PollResult,
    Snapshot,
    TrackedCall,
)
from worker.reconcile import Policy
from worker.scheduler import Lane, Scheduler
from worker.store.base import NewCall
from worker.store.errors import TransientStoreError
from worker.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio
FAST = TrackingConfig(poll_interval=0.01, pending_poll_interval=0.01)


class Scripted:
    """Answers every poll with ``status``; the test changes it while the scheduler runs."""

    name = "ultravox"

    def __init__(self) -> None:
        self.status = CallStatus.PENDING
        self.polls = 0

    def validate_call_id(self, call_id: str) -> str | None:
        return None

    async def fetch_call(self, call_id: str) -> PollResult:
        await anyio.lowlevel.checkpoint()
        self.polls += 1
        return Snapshot(status=self.status, provider_status=str(self.status))

    async def recording_source(self, call_id: str, recording_id: str
                               ) -> DownloadSource | NotFound | PollFailed:
        return NotFound()

    def download_headers(self, url: str) -> dict[str, str]:
        return {}


def scheduler_for(store: SQLiteStore, provider: Scripted, concurrency: int = 4) -> Scheduler:
    lane = Lane(provider=provider, policy=Policy(tracking=FAST, archiving=False),
                concurrency=concurrency, rate_limit=1000.0)
    return Scheduler(store, {"ultravox": lane}, idle_wait=0.05)


async def wait_until(check: Callable[[], object], timeout: float = 5.0) -> None:
    await harness.wait_until(check, timeout, "the scheduler")


async def test_listeners_wake_only_after_batches_with_events(store: SQLiteStore) -> None:
    """Polls that change nothing commit quietly; the one that emits call.started wakes."""
    provider = Scripted()
    scheduler = scheduler_for(store, provider)
    woken: list[int] = []
    scheduler.on_commit(lambda: woken.append(scheduler.stats.commits))
    await store.track(NewCall(provider="ultravox", call_id="c1"), time.time())
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await wait_until(lambda: scheduler.stats.commits >= 5)
        assert woken == []  # five commits of a pending call: nothing for the relay
        provider.status = CallStatus.LIVE
        await wait_until(lambda: bool(woken))
        scheduler.stop()
    events = await store.events_after(0, 10)
    assert [e.type for e in events] == ["call.started"]
    assert len(woken) == 1  # later polls of the live call emit nothing more


async def test_pollers_follow_the_concurrency_and_drain_on_stop(store: SQLiteStore,
                                                               tmp_path: Path) -> None:
    """Never more polls at once than slots, nor more calls claimed ahead than slots;
    stopping finishes what was claimed."""
    provider = Scripted()
    scheduler = scheduler_for(store, provider, concurrency=3)
    peak = peak_held = 0

    async def watch() -> None:
        nonlocal peak, peak_held
        while True:
            stats = scheduler.stats
            peak = max(peak, stats.in_flight["ultravox"])
            peak_held = max(peak_held, stats.in_flight["ultravox"] + stats.queued["ultravox"])
            await anyio.lowlevel.checkpoint()

    for n in range(20):
        await store.track(NewCall(provider="ultravox", call_id=f"c{n}"), time.time())
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        async with anyio.create_task_group() as polling:  # ends when run() has returned
            await polling.start(scheduler.run)
            await wait_until(lambda: provider.polls >= 60)
            scheduler.stop()
        tg.cancel_scope.cancel()
    assert 1 <= peak <= 3
    assert 3 < peak_held <= 6  # a queue as deep as the slots, no deeper
    assert scheduler.stats.in_flight["ultravox"] == scheduler.stats.queued["ultravox"] == 0
    with sqlite3.connect(tmp_path / "callwatch.db") as db:  # every claimed call was handed back
        assert db.execute("SELECT COUNT(*) FROM calls WHERE lease_until IS NOT NULL"
                          ).fetchone() == (0,)


async def test_a_lowered_concurrency_holds_from_the_next_poll(store: SQLiteStore) -> None:
    """After a SIGHUP lowers a provider's concurrency, no more polls run at once than the
    new limit, although the pollers started for the old one (and the queue) are still
    there."""
    provider = Slow()
    scheduler = scheduler_for(store, provider, concurrency=6)
    for n in range(40):
        await store.track(NewCall(provider="ultravox", call_id=f"c{n}"), time.time())
    peak_after = 0
    lowered = False

    async def watch() -> None:
        nonlocal peak_after
        while True:
            if lowered:
                peak_after = max(peak_after, scheduler.stats.in_flight["ultravox"])
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        async with anyio.create_task_group() as polling:
            await polling.start(scheduler.run)
            await wait_until(lambda: scheduler.stats.in_flight["ultravox"] == 6)
            lane = scheduler.lanes["ultravox"]
            scheduler.set_lanes({"ultravox": Lane(provider=provider, policy=lane.policy,
                                                    concurrency=2, rate_limit=1000.0)})
            await wait_until(lambda: scheduler.stats.in_flight["ultravox"] <= 2)
            lowered = True
            start = provider.polls
            await wait_until(lambda: provider.polls >= start + 20)
            scheduler.stop()
        tg.cancel_scope.cancel()
    assert 1 <= peak_after <= 2


class Slow(Scripted):
    """Takes 20 ms per poll, so the slots fill up."""

    async def fetch_call(self, call_id: str) -> PollResult:
        await anyio.sleep(0.02)
        return await super().fetch_call(call_id)


async def test_a_writer_that_cannot_commit_ages_the_schedulers_progress(
        store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle lanes keep going round, yet progress() stays at the first failed commit."""
    provider = Scripted()
    scheduler = scheduler_for(store, provider)

    async def refuse(*_: object) -> None:
        raise TransientStoreError("database or disk is full")

    monkeypatch.setattr(store, "apply_poll_results", refuse)
    monkeypatch.setattr("worker.store.retry.FIRST_DELAY", 0.01)
    await store.track(NewCall(provider="ultravox", call_id="c1"), time.time())
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await wait_until(lambda: scheduler.stats.uncommitted_since is not None)
        stuck = scheduler.stats.uncommitted_since
        before = scheduler.stats.lane_progress["ultravox"]
        await wait_until(lambda: scheduler.stats.lane_progress["ultravox"] > before)
        assert scheduler.progress() == stuck  # the lanes moved on; the writer did not
        monkeypatch.undo()  # the disk has room again
        await wait_until(lambda: scheduler.stats.uncommitted_since is None)
        assert scheduler.progress() > stuck
        tg.cancel_scope.cancel()


CALM = TrackingConfig(poll_interval=600.0, pending_poll_interval=600.0)


async def test_calls_due_within_one_tick_share_a_claim_and_a_commit(store: SQLiteStore,
                                                                    tmp_path: Path) -> None:
    """Four calls due a few ms apart inside one tick: one wake-up polls them all together and
    one commit stores them, each polled at most a tick after it was due."""
    tick = 0.3
    provider = Slow()
    lane = Lane(provider=provider, policy=Policy(tracking=CALM, archiving=False),
                concurrency=4, rate_limit=1000.0)
    scheduler = Scheduler(store, {"ultravox": lane}, idle_wait=5.0, tick=tick)
    claims = 0
    claim = store.claim_due_calls

    async def counting(provider: str, now: float, limit: int) -> list[TrackedCall]:
        nonlocal claims
        found = await claim(provider, now, limit)
        claims += bool(found)
        return found

    store.claim_due_calls = counting  # type: ignore[method-assign]
    # Due times inside one tick of the loop's clock (the grid the lanes wake on), 2 to 3
    # ticks from now: with one wake-up per due time this is four claims and four commits.
    loop_now, wall_now = anyio.current_time(), time.time()
    grid = (int(loop_now / tick) + 3) * tick
    due = [wall_now + (grid - loop_now) - 0.25 + 0.05 * k for k in range(4)]
    for k, at in enumerate(due):
        await store.track(NewCall(provider="ultravox", call_id=f"c{k}"), at)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await wait_until(lambda: scheduler.stats.commits >= 1 and provider.polls >= 4)
        await anyio.sleep(0.1)
        scheduler.stop()
    assert (claims, scheduler.stats.commits) == (1, 1)
    with sqlite3.connect(tmp_path / "callwatch.db") as db:
        polled = [row[0] for row in db.execute(
            "SELECT last_polled_at FROM calls ORDER BY call_id")]
    for at, when in zip(due, polled, strict=True):
        assert 0 <= when - at <= tick + 0.1


async def test_a_wake_is_not_held_for_the_tick(store: SQLiteStore) -> None:
    """A call made due through wake() (the API's track) is polled at once, not at the tick."""
    provider = Scripted()
    lane = Lane(provider=provider, policy=Policy(tracking=CALM, archiving=False),
                concurrency=4, rate_limit=1000.0)
    scheduler = Scheduler(store, {"ultravox": lane}, idle_wait=30.0, tick=10.0)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await anyio.sleep(0.1)  # the lane is asleep until its idle wait, on the tick
        await store.track(NewCall(provider="ultravox", call_id="c1"), time.time())
        woken = time.monotonic()
        scheduler.wake("ultravox")
        await wait_until(lambda: scheduler.stats.commits >= 1, timeout=2.0)
        assert time.monotonic() - woken < 1.0
        scheduler.stop()
