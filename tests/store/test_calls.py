"""The store contract for calls, events, leases and life cycle, on every backend."""

from __future__ import annotations

import pytest

from tests.store.conftest import StoreFactory
from tests.store.support import POLICY, T0, dead_owner, live, poll, tracked
from worker.model import CallStatus
from worker.reconcile import Decision, on_poll
from worker.store.base import NewCall, PermanentStoreError, PollApplied, Store

pytestmark = pytest.mark.anyio


async def test_track_is_idempotent_and_readable(store: Store) -> None:
    """A second track of the same call changes nothing; the call reads back as tracked."""
    assert await store.track(NewCall(provider="envoy", call_id="a", metadata={"k": [1]}), T0)
    assert not await store.track(NewCall(provider="envoy", call_id="a", metadata={"k": 2}), T0)
    call = await store.get_call("envoy", "a")
    assert call is not None and call.metadata == {"k": [1]} and call.status == CallStatus.PENDING
    assert await store.get_call("envoy", "nope") is None
    assert [c.call_id for c in await store.list_calls(limit=10, include_terminal=False)] == ["a"]


async def test_track_many_counts_only_new_calls(store: Store) -> None:
    """A bulk import tracks each call once, due at its own time."""
    await tracked(store, "a")
    new = await store.track_many([(NewCall(provider="envoy", call_id=c), T0 + i)
                                  for i, c in enumerate(["a", "b", "c"])])
    assert new == 2
    assert await store.next_due_at("envoy") == T0


async def test_a_leased_call_is_not_claimed_again_until_its_lease_runs_out(
        store_factory: StoreFactory) -> None:
    """Two workers on one database: a live lease keeps a call to one; expiry hands it over."""
    one = await store_factory(owner="host-a:1:x", lease_seconds=30)
    two = await store_factory(owner="host-b:2:y", lease_seconds=30)
    await tracked(one, "a", "b")
    first = await one.claim_due_calls("envoy", T0, 1)
    second = await two.claim_due_calls("envoy", T0, 10)
    assert [c.call_id for c in first] == ["a"] and [c.call_id for c in second] == ["b"]
    assert await two.claim_due_calls("envoy", T0 + 29, 10) == []
    taken = await two.claim_due_calls("envoy", T0 + 31, 10)
    assert sorted(c.call_id for c in taken) == ["a", "b"]


async def test_renewed_leases_outlive_lease_seconds(store_factory: StoreFactory) -> None:
    """``extend_call_leases`` keeps a long poll's call from another worker."""
    one = await store_factory(owner="host-a:1:x", lease_seconds=30)
    two = await store_factory(owner="host-b:2:y", lease_seconds=30)
    await tracked(one, "a")
    assert len(await one.claim_due_calls("envoy", T0, 1)) == 1
    assert await one.extend_call_leases(T0 + 25) == 1
    assert await two.claim_due_calls("envoy", T0 + 40, 10) == []
    assert len(await two.claim_due_calls("envoy", T0 + 56, 10)) == 1


async def test_state_and_events_are_written_together_and_each_event_once(store: Store) -> None:
    """A poll's events reach the outbox with its state; the same result again adds none."""
    await tracked(store, "a")
    await poll(store, "a", live(), T0)
    [call] = await store.claim_due_calls("envoy", T0 + 100, 1)
    events = await store.call_events("envoy", "a")
    assert [e.type for e in events] == ["call.started"] and call.status == CallStatus.LIVE
    repeat = on_poll(call.replace(started_notified=False), live(), T0 + 101, POLICY)
    await store.apply_poll_results([PollApplied(decision=repeat)], T0 + 101)
    assert [e.type for e in await store.call_events("envoy", "a")] == ["call.started"]
    followed = await store.events_after(0, 10)
    assert [e.id for e in followed] == [events[0].id]
    assert await store.events_after(followed[-1].seq, 10) == []


async def test_make_due_pulls_a_poll_forward_only(store: Store) -> None:
    """A provider's nudge makes a call due now, never later; unknown calls say False."""
    await tracked(store, "a")
    await poll(store, "a", live(), T0)
    due = await store.next_due_at("envoy")
    assert due is not None and due > T0
    assert await store.make_due("envoy", "a", T0 + 0.5)
    assert await store.next_due_at("envoy") == T0 + 0.5
    assert not await store.make_due("envoy", "nope", T0)


async def test_counts_report_states_events_and_the_oldest_due(store: Store) -> None:
    """Totals by (provider, state), events written and the earliest due poll."""
    await tracked(store, "a", "b")
    await poll(store, "a", live(), T0)
    counts = await store.counts()
    assert counts.calls_by_state == {("envoy", "live"): 1, ("envoy", "pending"): 1}
    assert counts.events == 1 and counts.oldest_due_at == T0 and counts.active == 2


async def test_a_call_set_aside_is_never_claimed_again_and_is_counted(
        store_factory: StoreFactory) -> None:
    """Set aside is durable: no claim, no make_due, a state of its own, after a reopen too."""
    store = await store_factory()
    await tracked(store, "a", "b")
    assert await store.set_aside("envoy", "a", "cannot encode", T0)
    assert not await store.set_aside("envoy", "nope", "x", T0)
    again = await store_factory()
    assert [c.call_id for c in await again.claim_due_calls("envoy", T0 + 999, 10)] == ["b"]
    assert not await again.make_due("envoy", "a", T0)
    counts = await again.counts()
    assert counts.calls_by_state[("envoy", "set_aside")] == 1 and counts.active == 1


async def test_unstorable_results_fail_permanently_and_leave_nothing(store: Store) -> None:
    """Data the backend cannot hold is a PermanentStoreError; the batch leaves no trace."""
    await tracked(store, "a")
    [call] = await store.claim_due_calls("envoy", T0, 1)
    broken = call.replace(pk=None, status=CallStatus.LIVE)
    decision = on_poll(call, live(), T0, POLICY)
    with pytest.raises(PermanentStoreError):
        await store.apply_poll_results(
            [PollApplied(decision=Decision(call=broken, events=decision.events))], T0)
    assert await store.call_events("envoy", "a") == []


async def test_deep_metadata_is_a_permanent_error_not_a_crash(store: Store) -> None:
    """Metadata nested past what the encoder can write fails as PermanentStoreError."""
    deep: dict[str, object] = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]  # type: ignore[assignment]
    await tracked(store, "a")
    [call] = await store.claim_due_calls("envoy", T0, 1)
    decision = on_poll(call.replace(metadata=deep), live(), T0, POLICY)
    with pytest.raises(PermanentStoreError):
        await store.apply_poll_results([PollApplied(decision=decision)], T0)


async def test_recover_and_release_hand_back_leases(store_factory: StoreFactory) -> None:
    """A dead worker's leases come back at the next start; a clean stop hands back its own."""
    dead = await store_factory(owner=dead_owner())
    await tracked(dead, "a", "b")
    assert len(await dead.claim_due_calls("envoy", T0, 1)) == 1
    alive = await store_factory()
    assert await alive.recover() == 1
    assert len(await alive.claim_due_calls("envoy", T0, 10)) == 2
    assert await alive.release_leases() == 2
    assert len(await alive.claim_due_calls("envoy", T0, 10)) == 2


async def test_life_cycle_answers(store: Store) -> None:
    """Schema version, integrity check, a healthy probe, and a close that can run twice."""
    assert await store.schema_version() >= 1  # each backend numbers its own migrations
    assert await store.integrity_check() == "ok"
    health = await store.probe()
    assert health.ok and health.problem is None
    assert store.owner and store.location and store.lease_seconds == 30
    await store.close()
    await store.close()


async def test_a_set_aside_call_reads_back_with_its_reason(store: Store) -> None:
    """``get_call`` carries why a call was set aside, so ``status`` can show it."""
    await tracked(store, "a")
    assert await store.set_aside("envoy", "a", "cannot encode", T0)
    call = await store.get_call("envoy", "a")
    assert call is not None and call.set_aside == "cannot encode"
