"""The store contract for untrack, the paged call list, heartbeats and attempt logs."""

from __future__ import annotations

import pytest

from tests.store.support import POLICY, T0, ended_with_recording, live, poll, tracked
from tests.store.test_queues import ALL, claim, settle, to_a, two_events
from worker.model import CallStatus
from worker.reconcile import on_poll
from worker.store.base import Heartbeat, NewCall, PollApplied, Store
from worker.webhooks.policy import Delivered, Retry

pytestmark = pytest.mark.anyio


async def test_untrack_stops_polling_keeps_its_first_time_and_is_repeatable(
        store: Store) -> None:
    """An untracked call is never claimed again; a second untrack is True and keeps the time."""
    await tracked(store, "a", "b")
    assert await store.untrack("envoy", "a", T0 + 5)
    assert await store.untrack("envoy", "a", T0 + 9)
    assert not await store.untrack("envoy", "nope", T0 + 9)
    assert not await store.untrack("ultravox", "a", T0 + 9)
    assert [c.call_id for c in await store.claim_due_calls("envoy", T0 + 60, 10)] == ["b"]
    call = await store.get_call("envoy", "a")
    assert call is not None and call.untracked_at == T0 + 5
    counts = await store.counts()
    assert counts.calls_by_state[("envoy", "untracked")] == 1 and counts.active == 1
    assert not await store.make_due("envoy", "a", T0 + 70)


async def test_a_poll_in_flight_when_untracked_does_not_bring_polling_back(store: Store) -> None:
    """A poll that commits after the untrack leaves the call unpolled."""
    await tracked(store, "a")
    [call] = await store.claim_due_calls("envoy", T0, 10)
    assert await store.untrack("envoy", "a", T0 + 1)
    await store.apply_poll_results([PollApplied(decision=on_poll(call, live(), T0 + 2, POLICY),
                                                result=live())], T0 + 2)
    assert await store.claim_due_calls("envoy", T0 + 3600, 10) == []
    assert await store.next_due_at("envoy") is None


async def test_untrack_drops_pending_downloads_but_not_queued_deliveries(store: Store) -> None:
    """After untrack its recording is no download job; its queued delivery still goes out."""
    await tracked(store, "c1")
    await poll(store, "c1", ended_with_recording(), T0)
    await store.fan_out(to_a, T0 + 1)
    assert await store.next_download_due_at(ALL) is not None
    assert await store.untrack("envoy", "c1", T0 + 2)
    assert await store.claim_due_downloads(ALL, T0 + 3, 10) == []
    assert await store.next_download_due_at(ALL) is None
    assert (await store.archive_state()).pending == 0
    [delivery] = await claim(store, T0 + 3)
    await settle(store, delivery, Delivered(), T0 + 3)


async def test_list_calls_page_is_newest_first_filtered_and_keyset_paged(store: Store) -> None:
    """Pages follow (tracked_at, pk) descending; a call tracked meanwhile shifts nothing."""
    for i in range(5):
        assert await store.track(NewCall(provider="envoy", call_id=f"e{i}"), T0 + i)
    await store.track(NewCall(provider="ultravox", call_id="u0"), T0 + 2)  # same time as e2
    await store.untrack("envoy", "e1", T0 + 10)
    first = await store.list_calls_page(limit=3)
    assert [c.call_id for c in first.calls] == ["e4", "e3", "u0"] and first.next is not None
    await store.track(NewCall(provider="envoy", call_id="late"), T0 + 100)
    second = await store.list_calls_page(limit=3, after=first.next)
    assert [c.call_id for c in second.calls] == ["e2", "e1", "e0"] and second.next is None
    only = await store.list_calls_page(limit=10, provider="ultravox")
    assert [c.call_id for c in only.calls] == ["u0"] and only.next is None
    gone = await store.list_calls_page(limit=10, state="untracked")
    assert [c.call_id for c in gone.calls] == ["e1"]
    pending = await store.list_calls_page(limit=10, provider="envoy", state="pending")
    assert [c.call_id for c in pending.calls] == ["late", "e4", "e3", "e2", "e0"]
    assert (await store.list_calls_page(limit=10, state="completed")).calls == []


async def test_heartbeats_are_written_replaced_and_removed(store: Store) -> None:
    """One row per worker: a beat replaces the last, removal leaves the others."""
    def beat(owner: str, at: float, error: str | None = None) -> Heartbeat:
        return Heartbeat(owner=owner, host="h", pid=7, version="1.0", started_at=T0,
                         beat_at=at, progress_at=at - 1, last_error=error,
                         last_error_at=at if error else None)

    await store.beat(beat("h:7:a", T0 + 5))
    await store.beat(beat("h:8:b", T0 + 6))
    await store.beat(beat("h:7:a", T0 + 10, "store.unhealthy: disk full"))
    found = await store.heartbeats()
    assert [(h.owner, h.beat_at) for h in found] == [("h:7:a", T0 + 10), ("h:8:b", T0 + 6)]
    assert found[0].last_error == "store.unhealthy: disk full" and found[0].started_at == T0
    await store.remove_heartbeat("h:7:a")
    assert [h.owner for h in await store.heartbeats()] == ["h:8:b"]


async def test_event_attempts_lists_every_attempt_with_its_reply(store: Store) -> None:
    """Every attempt of an event, oldest first, with its endpoint; None for no such event."""
    await two_events(store)
    await store.fan_out(to_a, T0 + 200)
    [first] = await claim(store, T0 + 200)
    await settle(store, first, Retry(at=T0 + 300, reason="500"), T0 + 200)
    [again] = await claim(store, T0 + 300)
    await settle(store, again, Delivered(), T0 + 300)
    attempts = await store.event_attempts(first.event_id)
    assert attempts is not None
    assert [(a.endpoint, a.attempt.number, a.attempt.status) for a in attempts] == \
        [(to_a("", None)[0].endpoint, 1, 500), (to_a("", None)[0].endpoint, 2, 500)]
    assert attempts[-1].state == "delivered" and attempts[0].attempt.started_at == T0 + 200
    assert await store.event_attempts("msg_" + "0" * 32) is None
    call = await store.get_call("envoy", "c1")
    assert call is not None and call.status == CallStatus.ENDED
