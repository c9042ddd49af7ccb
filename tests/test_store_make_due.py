"""Store.make_due: how a provider's own webhook moves a call to the front of the queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from worker.model import Terminal
from worker.reconcile import Decision
from worker.store.base import NewCall, PollApplied
from worker.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio
T0 = 1_800_000_000.0
UV = "6f1c2a9e-5b8d-4f3e-9a0b-2c4d6e8f0a1b"


@pytest.fixture(params=["sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    assert request.param == "sqlite"
    opened = await SQLiteStore.open(tmp_path / "callwatch.db")
    yield opened
    await opened.close()


async def test_a_tracked_call_due_later_becomes_due_now(store: SQLiteStore) -> None:
    """True, and the call is claimable at ``now`` instead of at its scheduled time."""
    await store.track(NewCall(provider="ultravox", call_id=UV), T0 + 600)
    assert await store.claim_due_calls("ultravox", T0, 10) == []
    assert await store.make_due("ultravox", UV, T0) is True
    assert [c.call_id for c in await store.claim_due_calls("ultravox", T0, 10)] == [UV]


async def test_an_overdue_call_keeps_its_earlier_time(store: SQLiteStore) -> None:
    """make_due never pushes a call back: the earlier of the two times wins."""
    await store.track(NewCall(provider="ultravox", call_id=UV), T0)
    assert await store.make_due("ultravox", UV, T0 + 50) is True
    call = await store.get_call("ultravox", UV)
    assert call is not None and call.next_poll_at == T0


async def test_untracked_or_finished_calls_are_left_alone(store: SQLiteStore) -> None:
    """False for a call we do not track, or whose tracking is done (nothing to poll)."""
    assert await store.make_due("ultravox", UV, T0) is False
    await store.track(NewCall(provider="ultravox", call_id=UV), T0)
    (claimed,) = await store.claim_due_calls("ultravox", T0, 1)
    done = claimed.replace(terminal=Terminal.COMPLETED)
    await store.apply_poll_results([PollApplied(decision=Decision(call=done))], T0 + 1)
    assert await store.make_due("ultravox", UV, T0 + 2) is False
    assert await store.claim_due_calls("ultravox", T0 + 10_000, 10) == []


async def test_the_same_id_at_another_provider_is_not_touched(store: SQLiteStore) -> None:
    """The provider is part of the key."""
    await store.track(NewCall(provider="apifycloud", call_id=UV), T0 + 600)
    assert await store.make_due("ultravox", UV, T0) is False
    call = await store.get_call("apifycloud", UV)
    assert call is not None and call.next_poll_at == T0 + 600
