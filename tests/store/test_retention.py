"""The store contract for retention: which settled calls are pruned, and what goes with them."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tests.store.support import POLICY, T0, ended_with_recording, poll, tracked
from worker.reconcile import Archived
from worker.store.base import NewCall, Store
from worker.webhooks.base import AttemptLog, AttemptResult, ClaimedDelivery, Route
from worker.webhooks.policy import Delivered, Disabled

pytestmark = pytest.mark.anyio
A = "https://a.example/hooks"
ALL = ["envoy"]
LATER = T0 + 10_000  # a cut-off after every call below settled


def to_a(event_type: str, webhook_url: str | None) -> Sequence[Route]:
    return [Route(endpoint=A)]


async def settled(store: Store, call_id: str, now: float = T0) -> None:
    """Track ``call_id`` and take it to its terminal state (its recording archived)."""
    await tracked(store, call_id)
    await poll(store, call_id, ended_with_recording(), now)
    [job] = [j for j in await store.claim_due_downloads(ALL, now + 2, 10) if j.call_id == call_id]
    done = Archived(path=f"envoy/{call_id}/r1.mp3", size=10, sha256="0" * 64)
    assert await store.apply_archive_result(job, done, now + 3, POLICY)
    call = await store.get_call("envoy", call_id)
    assert call is not None and call.terminal is not None


async def deliver_all(store: Store, now: float) -> None:
    """Fan out and deliver every delivery, logging one attempt each."""
    await store.fan_out(to_a, now)
    while found := (await store.claim_due_deliveries(now, free={}, default_free=8, limit=100,
                                                     lease_seconds=60)).deliveries:
        await answer(store, found, now)


async def answer(store: Store, items: Sequence[ClaimedDelivery], now: float,
                 *, disabled: bool = False) -> None:
    await store.record_attempts([
        AttemptResult(delivery=item, decision=Disabled(reason="410") if disabled else Delivered(),
                      attempt=AttemptLog(number=item.attempt, started_at=now, latency=0.01,
                                         status=410 if disabled else 200))
        for item in items], now)


async def test_settled_calls_are_pruned_with_their_rows_and_tracking_again_starts_afresh(
        store: Store) -> None:
    """A settled, delivered call goes with its events and attempts; live calls stay."""
    await settled(store, "old")
    await tracked(store, "live")
    await deliver_all(store, T0 + 100)
    before = await store.table_stats()
    assert before.calls == 2 and before.events >= 3 and before.attempts >= 3
    assert await store.prune_settled(T0, limit=10) == []  # settled after the cut-off
    written = (await store.counts()).events
    [gone] = await store.prune_settled(LATER, limit=10)
    assert (gone.provider, gone.call_id) == ("envoy", "old") and gone.settled_at >= T0
    assert await store.get_call("envoy", "old") is None
    assert await store.call_events("envoy", "old") == []
    assert await store.list_deliveries(call=("envoy", "old")) == []
    after = await store.table_stats()
    assert (after.calls, after.events, after.deliveries, after.attempts) == (1, 0, 0, 0)
    assert (await store.counts()).events == written  # events ever written: not a row count
    assert await store.get_call("envoy", "live") is not None
    assert await store.track(NewCall(provider="envoy", call_id="old"), LATER)
    again = await store.get_call("envoy", "old")
    assert again is not None and again.terminal is None and not again.recordings
    assert await store.prune_settled(LATER, limit=10) == []


async def test_a_call_with_an_open_or_unsent_delivery_is_not_pruned(store: Store) -> None:
    """Events not fanned out yet, pending or disabled deliveries keep a settled call."""
    await settled(store, "c1")
    assert await store.prune_settled(LATER, limit=10) == []  # events not fanned out
    await store.fan_out(to_a, T0 + 100)
    assert await store.prune_settled(LATER, limit=10) == []  # pending deliveries
    first = (await store.claim_due_deliveries(T0 + 100, free={}, default_free=8, limit=100,
                                              lease_seconds=60)).deliveries
    await answer(store, first, T0 + 100, disabled=True)
    assert await store.prune_settled(LATER, limit=10) == []  # waiting on a disabled endpoint
    await store.replay(T0 + 200, dead=True)
    await deliver_all(store, T0 + 200)
    assert [p.call_id for p in await store.prune_settled(LATER, limit=10)] == ["c1"]


async def test_a_dry_run_deletes_nothing_and_pages_through_batches(store: Store) -> None:
    """``dry_run`` lists what would go, ``limit`` at a time; a real prune takes batches."""
    for name in ("a", "b", "c"):
        await settled(store, name)
    await deliver_all(store, T0 + 100)
    first = await store.prune_settled(LATER, limit=2, dry_run=True)
    rest = await store.prune_settled(LATER, limit=2, dry_run=True, after=first[-1].position)
    assert [p.call_id for p in first + rest] == ["a", "b", "c"]
    assert (await store.table_stats()).calls == 3
    assert len(await store.prune_settled(LATER, limit=2)) == 2
    assert len(await store.prune_settled(LATER, limit=2)) == 1
    assert (await store.table_stats()).calls == 0


async def test_space_is_reclaimed_and_a_vacuum_keeps_the_data(store: Store) -> None:
    """After a prune, reclaiming frees space; a full vacuum keeps every row."""
    await settled(store, "a")
    await tracked(store, "b")
    await deliver_all(store, T0 + 100)
    await store.prune_settled(LATER, limit=10)
    assert await store.reclaim_space() >= 0
    await store.vacuum()
    stats = await store.table_stats()
    assert stats.calls == 1 and stats.size_bytes > 0
    assert await store.get_call("envoy", "b") is not None


async def test_an_untracked_call_is_settled_from_its_untrack_and_pruned_after(
        store: Store) -> None:
    """Untracking settles a call (CONTRACT: a terminal event or untrack): it is pruned once
    settled longer than the cut-off, and a live call never is."""
    await tracked(store, "gone")
    await tracked(store, "live")
    assert await store.untrack("envoy", "gone", T0 + 50)
    assert await store.prune_settled(T0 + 49, limit=10) == []  # untracked after the cut-off
    [pruned] = await store.prune_settled(LATER, limit=10)
    assert (pruned.call_id, pruned.settled_at) == ("gone", T0 + 50)
    assert await store.get_call("envoy", "gone") is None
    assert await store.get_call("envoy", "live") is not None
