"""The contract of ``counts``: maintained totals that always equal a full recount."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.store.support import POLICY, T0, ended_with_recording, live
from worker.call_view import state_of
from worker.model import CallStatus, FailureKind, NotFound, PollFailed, PollResult, Snapshot
from worker.reconcile import on_poll
from worker.store.base import NewCall, PollApplied, Store

pytestmark = pytest.mark.anyio

PROVIDERS = ("envoy", "other")
CALL_IDS = tuple(f"c{i}" for i in range(8))

RESULTS: tuple[PollResult, ...] = (
    live(),
    Snapshot(status=CallStatus.ENDED, provider_status="ended", started_at=T0, ended_at=T0 + 1),
    ended_with_recording(),
    Snapshot(status=CallStatus.ENDED, provider_status="ended", started_at=T0, ended_at=T0 + 1,
             recording_expected=False),  # settles at once: completed
    NotFound(),
    PollFailed(kind=FailureKind.TRANSIENT, message="timeout"),
)

tracks = st.tuples(st.just("track"), st.sampled_from(PROVIDERS), st.sampled_from(CALL_IDS))
polls = st.tuples(st.just("poll"), st.sampled_from(PROVIDERS),
                  st.lists(st.sampled_from(range(len(RESULTS))), min_size=1, max_size=8))
asides = st.tuples(st.just("set_aside"), st.sampled_from(PROVIDERS), st.sampled_from(CALL_IDS))
dues = st.tuples(st.just("make_due"), st.sampled_from(PROVIDERS), st.sampled_from(CALL_IDS))
claims = st.tuples(st.just("claim"), st.sampled_from(PROVIDERS), st.integers(1, 3))
operations = st.lists(st.one_of(tracks, polls, asides, dues, claims), max_size=30)


async def poll(store: Store, call_id: str, result: PollResult, now: float) -> None:
    """Claim ``call_id`` of envoy and apply ``result`` to it through the real reconciler."""
    claimed = [c for c in await store.claim_due_calls("envoy", now, 100) if c.call_id == call_id]
    assert claimed, f"{call_id} was not due"
    decision = on_poll(claimed[0], result, now, POLICY)
    await store.apply_poll_results([PollApplied(decision=decision, result=result)], now)


async def recount(store: Store) -> dict[tuple[str, str], int]:
    """Every call's state counted one by one, through the contract's own read path."""
    calls = await store.list_calls(limit=10_000, include_terminal=True)
    return dict(Counter((c.provider, state_of(c)) for c in calls))


async def run(store: Store, ops: list[tuple[object, ...]], start: float) -> float:
    """Apply ``ops`` with a clock that advances far enough that every call is due again."""
    now = start
    for op in ops:
        now += 5_000.0
        match op:
            case ("track", str(provider), str(call_id)):
                await store.track(NewCall(provider=provider, call_id=call_id), now)
            case ("poll", str(provider), list(picks)):
                claimed = await store.claim_due_calls(provider, now, len(picks))
                await store.apply_poll_results(
                    [PollApplied(decision=on_poll(call, RESULTS[pick], now, POLICY),
                                 result=RESULTS[pick])
                     for call, pick in zip(claimed, picks, strict=False)],  # fewer were due
                    now)
            case ("set_aside", str(provider), str(call_id)):
                await store.set_aside(provider, call_id, "cannot encode", now)
            case ("make_due", str(provider), str(call_id)):
                await store.make_due(provider, call_id, now)
            case ("claim", str(provider), int(limit)):
                await store.claim_due_calls(provider, now, limit)  # leased, never applied
    return now


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
async def test_counts_equal_a_full_recount_after_any_operations(store: Store,
                                                                 ops: list[tuple[object, ...]]
                                                                 ) -> None:
    """Whatever tracks, polls, set-asides, claims and make-dues ran, in any order and
    batching, ``counts`` equals the calls counted one by one (examples share the store, so
    later ones start from what earlier ones left)."""
    last = await store.list_calls(limit=1, include_terminal=True)
    await run(store, ops, max([T0] + [c.tracked_at for c in last]) + 1e6)
    counts = await store.counts()
    assert dict(counts.calls_by_state) == await recount(store)
    assert all(n > 0 for n in counts.calls_by_state.values())
    assert await store.recount_calls() == 0  # nothing drifted: nothing to repair


async def test_counts_follow_every_kind_of_state_change(store: Store) -> None:
    """Each state a call can be in is counted, and a call moves from one count to the next."""
    for call_id in ("a", "b", "c", "d", "e"):
        await store.track(NewCall(provider="envoy", call_id=call_id), T0)
    await store.track(NewCall(provider="other", call_id="a"), T0)
    assert dict((await store.counts()).calls_by_state) == {("envoy", "pending"): 5,
                                                          ("other", "pending"): 1}
    now = T0
    for call_id, result in (("a", live()), ("b", live()), ("c", ended_with_recording()),
                            ("d", RESULTS[3]), ("e", NotFound())):
        now += 100  # past the leases the previous claim took
        await poll(store, call_id, result, now)
    await store.set_aside("envoy", "b", "cannot encode", now)
    later = now + 1e6  # past the not-found grace: e fails
    await store.make_due("envoy", "e", later)
    await poll(store, "e", NotFound(), later)
    counts = await store.counts()
    assert dict(counts.calls_by_state) == {
        ("envoy", "live"): 1, ("envoy", "set_aside"): 1, ("envoy", "ended"): 1,
        ("envoy", "completed"): 1, ("envoy", "tracking_failed"): 1, ("other", "pending"): 1}
    assert dict(counts.calls_by_state) == await recount(store)
    assert counts.active == 3


async def test_oldest_due_is_the_earliest_due_poll_of_any_provider(store: Store) -> None:
    """``oldest_due_at`` is the earliest next poll over every provider, None when none."""
    assert (await store.counts()).oldest_due_at is None
    await store.track(NewCall(provider="envoy", call_id="a"), T0 + 50)
    await store.track(NewCall(provider="other", call_id="b"), T0 + 10)
    assert (await store.counts()).oldest_due_at == T0 + 10
    await store.set_aside("other", "b", "bad", T0)
    assert (await store.counts()).oldest_due_at == T0 + 50
