"""The store contract, discovery's part: the lease, the mark, the first run (every backend)."""

from __future__ import annotations

import anyio
import pytest

from tests.store.conftest import StoreFactory
from worker.store.base import NewCall, Store

pytestmark = pytest.mark.anyio
T0 = 1_800_000_000.0


@pytest.fixture
async def stores(store_factory: StoreFactory) -> tuple[Store, Store]:
    """Two workers (two owners on other hosts) on one database."""
    return (await store_factory(owner="host-a:1:aa"), await store_factory(owner="host-b:2:bb"))


async def test_one_worker_sweeps_a_provider_at_a_time(
    stores: tuple[Store, Store],
) -> None:
    """While one worker holds the lease the other gets None; after release it gets the row."""
    a, b = stores
    state = await a.claim_discovery("ultravox", T0)
    assert state is not None and (state.first_ran_at, state.mark) == (T0, None)
    assert await b.claim_discovery("ultravox", T0 + 1) is None
    assert await b.claim_discovery("envoy", T0 + 1) is not None  # providers are independent
    assert await a.claim_discovery("ultravox", T0 + 2) is not None  # the holder may renew
    await a.release_discovery("ultravox")
    again = await b.claim_discovery("ultravox", T0 + 3)
    assert again is not None and again.first_ran_at == T0  # the first run is kept


async def test_an_expired_lease_is_taken_over_and_the_old_holder_loses_it(
    stores: tuple[Store, Store],
) -> None:
    """A dead worker's lease runs out; its late mark write is refused (False)."""
    a, b = stores
    assert await a.claim_discovery("envoy", T0, lease=10) is not None
    assert await b.claim_discovery("envoy", T0 + 5) is None
    assert await b.claim_discovery("envoy", T0 + 11) is not None
    assert await a.advance_discovery("envoy", T0 + 11, T0 + 12) is False
    state = await a.discovery_state("envoy")
    assert state is not None and state.mark is None


async def test_the_mark_is_durable_and_never_moves_back(
    stores: tuple[Store, Store], store_factory: StoreFactory,
) -> None:
    """advance keeps the larger mark; None leaves it; a reopened file has it."""
    a, _ = stores
    assert await a.claim_discovery("ultravox", T0) is not None
    assert await a.advance_discovery("ultravox", None, T0 + 1)
    assert await a.advance_discovery("ultravox", T0 + 50, T0 + 2)
    assert await a.advance_discovery("ultravox", T0 + 20, T0 + 3)
    assert await a.advance_discovery("ultravox", None, T0 + 4)
    await a.close()
    reopened = await store_factory()
    state = await reopened.discovery_state("ultravox")
    assert state is not None and state.mark == T0 + 50
    assert await reopened.discovery_state("envoy") is None


async def test_track_many_counts_only_new_calls(stores: tuple[Store, Store]) -> None:
    """Tracking a listed call again changes nothing and is not counted as new."""
    a, _ = stores
    await a.track(NewCall(provider="envoy", call_id="call_1", metadata={"k": "v"}), T0)
    new = await a.track_many([(NewCall(provider="envoy", call_id=f"call_{i}"), T0 + 1)
                              for i in range(3)])
    assert new == 2
    kept = await a.get_call("envoy", "call_1")
    assert kept is not None and kept.metadata == {"k": "v"}


async def test_a_dead_local_holder_loses_its_lease_at_once(store_factory: StoreFactory) -> None:
    """A lease held by a process of this host that no longer runs is taken over at once."""
    import socket

    dead = await store_factory(owner=f"{socket.gethostname()}:999999999:dd")
    alive = await store_factory(owner=f"{socket.gethostname()}:1:ee")
    assert await dead.claim_discovery("ultravox", T0) is not None
    assert await alive.claim_discovery("ultravox", T0 + 1) is not None


async def test_a_page_with_tracked_and_repeated_calls_tracks_each_once(store: Store) -> None:
    """Calls tracked already are left as they are; a call listed twice in one batch is
    tracked once, as its first occurrence says; the count and the maintained counts are
    exact; tracking writes no event (``call.started`` comes from a poll); again: nothing new.
    """
    await store.track(NewCall(provider="ultravox", call_id="old", metadata={"k": 1}), T0)
    batch = [(NewCall(provider="ultravox", call_id="a"), T0 + 5),
             (NewCall(provider="ultravox", call_id="old"), T0 + 5),
             (NewCall(provider="ultravox", call_id="a", metadata={"second": True}), T0 + 6),
             (NewCall(provider="envoy", call_id="a"), T0 + 6),
             (NewCall(provider="ultravox", call_id="b", webhook_url="https://h.example/w"),
              T0 + 7)]
    assert await store.track_many(batch) == 3
    a = await store.get_call("ultravox", "a")
    assert a is not None and a.metadata == {} and a.next_poll_at == T0 + 5
    old = await store.get_call("ultravox", "old")
    assert old is not None and old.metadata == {"k": 1} and old.next_poll_at == T0
    b = await store.get_call("ultravox", "b")
    assert b is not None and b.webhook_url == "https://h.example/w" and b.next_poll_at == T0 + 7
    counts = await store.counts()
    assert counts.calls_by_state == {("ultravox", "pending"): 3, ("envoy", "pending"): 1}
    assert await store.events_after(0, 10) == []
    assert await store.track_many(batch) == 0
    assert (await store.counts()).calls_by_state == counts.calls_by_state


async def test_concurrent_track_many_count_each_new_call_once(
    store_factory: StoreFactory,
) -> None:
    """Workers tracking overlapping pages at once: the counts they return add up to the
    calls tracked (no worker counts another's rows as its own)."""
    workers = [await store_factory(owner=f"host-{n}:{n}:w") for n in range(4)]
    ids = [f"call_{i:04d}" for i in range(600)]

    async def sweep(store: Store, offset: int, results: list[int]) -> None:
        for start in range(offset, offset + 600, 100):
            page = [ids[i % 600] for i in range(start, start + 100)]
            results.append(await store.track_many(
                [(NewCall(provider="envoy", call_id=c), T0) for c in page]))

    results: list[int] = []
    async with anyio.create_task_group() as tg:
        for n, worker in enumerate(workers):
            tg.start_soon(sweep, worker, n * 150, results)
    assert sum(results) == 600
    assert (await workers[0].counts()).calls_by_state == {("envoy", "pending"): 600}
