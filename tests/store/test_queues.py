"""The store contract for webhook deliveries and the download queue, on every backend."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tests.store.conftest import StoreFactory
from tests.store.support import POLICY, T0, dead_owner, ended_with_recording, live, poll, tracked
from worker.model import CallStatus, DownloadSource
from worker.reconcile import Archived
from worker.store.base import Store
from worker.webhooks.base import (
    AttemptLog,
    AttemptResult,
    ClaimedDelivery,
    DeliveryState,
    ListFilter,
    Route,
)
from worker.webhooks.policy import Dead, Decision, Delivered, Disabled, Retry

pytestmark = pytest.mark.anyio
A, B = "https://a.example/hooks", "https://b.example/hooks"
ALL = ["envoy"]


def to_a(event_type: str, webhook_url: str | None) -> Sequence[Route]:
    return [Route(endpoint=A)]


async def two_events(store: Store, call_id: str = "c1") -> None:
    """call.started then call.ended (and recording.available) for one call."""
    await tracked(store, call_id)
    await poll(store, call_id, live(), T0)
    await poll(store, call_id, ended_with_recording(), T0 + 100)


async def claim(store: Store, now: float, lease: float = 60.0) -> list[ClaimedDelivery]:
    found = await store.claim_due_deliveries(now, free={}, default_free=8, limit=100,
                                             lease_seconds=lease)
    return found.deliveries


async def settle(store: Store, item: ClaimedDelivery, decision: Decision, now: float) -> None:
    attempt = AttemptLog(number=item.attempt, started_at=now, latency=0.01, status=500)
    await store.record_attempts([AttemptResult(delivery=item, decision=decision,
                                               attempt=attempt)], now)


async def test_deliveries_of_one_call_to_one_endpoint_go_in_event_order(store: Store) -> None:
    """The next event of a chain is claimable only once the one before it is finished."""
    await two_events(store)
    assert await store.fan_out(to_a, T0 + 200) >= 2
    assert await store.fan_out(to_a, T0 + 200) == 0  # the cursor moved: nothing twice
    [first] = await claim(store, T0 + 200)
    assert first.event_type == "call.started"
    await settle(store, first, Retry(at=T0 + 300, reason="500"), T0 + 200)
    assert await claim(store, T0 + 250) == []  # the head waits, and so does the rest
    [again] = await claim(store, T0 + 300)
    assert again.event_id == first.event_id and again.attempt == 2
    await settle(store, again, Delivered(), T0 + 300)
    [second] = await claim(store, T0 + 300)
    assert second.event_type == "call.ended"


async def test_two_relays_never_hold_the_same_delivery(store_factory: StoreFactory) -> None:
    """A claimed delivery is leased; another relay gets it only after the lease ran out."""
    one = await store_factory(owner="host-a:1:x")
    two = await store_factory(owner="host-b:2:y")
    await two_events(one)
    await one.fan_out(to_a, T0 + 200)
    assert len(await claim(one, T0 + 200, lease=30)) == 1
    assert await claim(two, T0 + 220) == []
    assert len(await claim(two, T0 + 231)) == 1


async def test_dead_and_disabled_are_listed_counted_and_replayed(store: Store) -> None:
    """Dead and 410-disabled deliveries show in lists and counts; a replay queues them again."""
    await two_events(store)
    await store.fan_out(to_a, T0 + 200)
    [first] = await claim(store, T0 + 200)
    await settle(store, first, Dead(reason="gave up"), T0 + 200)
    [second] = await claim(store, T0 + 200)
    await settle(store, second, Disabled(reason="410"), T0 + 200)
    counts = await store.delivery_counts()
    assert counts.dead == 1 and counts.disabled >= 1
    assert [e.url for e in counts.disabled_endpoints] == [A]
    dead = await store.list_deliveries(only=ListFilter.DEAD)
    assert [d.event_id for d in dead] == [first.event_id] and dead[0].state == DeliveryState.DEAD
    mine = await store.list_deliveries(call=("envoy", "c1"))
    assert [d.event_id for d in mine][:2] == [first.event_id, second.event_id]
    replayed = await store.replay(T0 + 300, dead=True)
    assert replayed.found and replayed.requeued >= 2 and replayed.enabled == (A,)
    assert not (await store.replay(T0 + 300, event_id="msg_" + "0" * 32)).found
    [back] = await claim(store, T0 + 300)
    assert back.event_id == first.event_id and back.attempt == 1


async def test_relay_leases_are_recovered_and_released(store_factory: StoreFactory) -> None:
    """A dead relay's deliveries come back at start; a clean stop hands back its own."""
    dead = await store_factory(owner=dead_owner())
    await two_events(dead)
    await dead.fan_out(to_a, T0 + 200)
    assert len(await claim(dead, T0 + 200, lease=600)) == 1
    alive = await store_factory()
    assert await alive.recover_deliveries(T0 + 201) == 1
    assert len(await claim(alive, T0 + 201, lease=600)) == 1
    assert await alive.release_deliveries(T0 + 202) == 1
    assert len(await claim(alive, T0 + 202)) == 1


async def test_a_download_is_claimed_once_settled_once_and_completes_the_call(
        store_factory: StoreFactory) -> None:
    """The queue: one worker per job under a lease; archiving it completes the call."""
    one = await store_factory(owner="host-a:1:x", lease_seconds=30)
    two = await store_factory(owner="host-b:2:y", lease_seconds=30)
    await tracked(one, "c1")
    await poll(one, "c1", ended_with_recording(), T0)
    assert await one.next_download_due_at(ALL) is not None
    [job] = await one.claim_due_downloads(ALL, T0 + 1, 10)
    assert job.recording_id == "r1" and job.url == "https://s.example/r1"
    assert await two.claim_due_downloads(ALL, T0 + 20, 10) == []
    assert await one.extend_download_leases(T0 + 20) == 1
    assert await two.claim_due_downloads(ALL, T0 + 40, 10) == []
    await one.update_recording_link(job, DownloadSource(url="https://s.example/fresh",
                                                        expires_at=T0 + 7200))
    info = await one.download_info("envoy", "c1")
    assert info["r1"].in_progress
    done = Archived(path="envoy/c1/r1.mp3", size=10, sha256="0" * 64)
    assert await one.apply_archive_result(job, done, T0 + 41, POLICY)
    call = await one.get_call("envoy", "c1")
    assert call is not None and call.terminal is not None
    assert call.status == CallStatus.ENDED
    assert await one.archive_state() is not None


async def test_download_failures_reschedule_and_leases_come_back(
        store_factory: StoreFactory) -> None:
    """A failure frees the job until its retry time; dead or stopped workers hand jobs back."""
    dead = await store_factory(owner=dead_owner())
    await tracked(dead, "c1")
    await poll(dead, "c1", ended_with_recording(), T0)
    [job] = await dead.claim_due_downloads(ALL, T0, 10)
    alive = await store_factory()
    assert await alive.recover_downloads() == 1
    [job] = await alive.claim_due_downloads(ALL, T0, 10)
    await alive.record_download_failure(job, reason="503", retry_at=T0 + 60, counted=True)
    assert await alive.claim_due_downloads(ALL, T0 + 59, 10) == []
    assert await alive.next_download_due_at(ALL) == T0 + 60
    [job] = await alive.claim_due_downloads(ALL, T0 + 60, 10)
    assert job.attempts == 1 and job.last_error == "503"
    assert await alive.release_downloads() == 1
    await alive.set_archive_paused("disk full", T0)
    state = await alive.archive_state()
    assert state.paused_reason == "disk full" and state.pending == 1
    await alive.set_archive_paused(None, T0 + 1)
    assert (await alive.archive_state()).paused_reason is None
