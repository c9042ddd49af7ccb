"""Discovery's store contract on a real SQLite file: the lease, the mark, the first run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from worker.store.base import NewCall, Store
from worker.store.factory import open_store

pytestmark = pytest.mark.anyio
T0 = 1_800_000_000.0


@pytest.fixture(params=["sqlite"])
async def stores(request: pytest.FixtureRequest,
                 tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    """Two workers (two owners) on one database."""
    assert request.param == "sqlite"
    path = tmp_path / "callwatch.db"
    first = await open_store(path, owner="host-a:1:aa")
    second = await open_store(path, owner="host-b:2:bb")
    yield first, second
    await first.close()
    await second.close()


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
    stores: tuple[Store, Store], tmp_path: Path,
) -> None:
    """advance keeps the larger mark; None leaves it; a reopened file has it."""
    a, _ = stores
    assert await a.claim_discovery("ultravox", T0) is not None
    assert await a.advance_discovery("ultravox", None, T0 + 1)
    assert await a.advance_discovery("ultravox", T0 + 50, T0 + 2)
    assert await a.advance_discovery("ultravox", T0 + 20, T0 + 3)
    assert await a.advance_discovery("ultravox", None, T0 + 4)
    reopened = await open_store(tmp_path / "callwatch.db")
    try:
        state = await reopened.discovery_state("ultravox")
        assert state is not None and state.mark == T0 + 50
        assert await reopened.discovery_state("envoy") is None
    finally:
        await reopened.close()


async def test_track_many_counts_only_new_calls(stores: tuple[Store, Store]) -> None:
    """Tracking a listed call again changes nothing and is not counted as new."""
    a, _ = stores
    await a.track(NewCall(provider="envoy", call_id="call_1", metadata={"k": "v"}), T0)
    new = await a.track_many([(NewCall(provider="envoy", call_id=f"call_{i}"), T0 + 1)
                              for i in range(3)])
    assert new == 2
    kept = await a.get_call("envoy", "call_1")
    assert kept is not None and kept.metadata == {"k": "v"}


async def test_a_dead_local_holder_loses_its_lease_at_once(tmp_path: Path) -> None:
    """A lease held by a process of this host that no longer runs is taken over at once."""
    import socket

    path = tmp_path / "callwatch.db"
    dead = await open_store(path, owner=f"{socket.gethostname()}:999999999:dd")
    alive = await open_store(path, owner=f"{socket.gethostname()}:1:ee")
    try:
        assert await dead.claim_discovery("ultravox", T0) is not None
        assert await alive.claim_discovery("ultravox", T0 + 1) is not None
    finally:
        await dead.close()
        await alive.close()
