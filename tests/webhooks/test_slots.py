"""The relay's per-endpoint queues: limits, turn-taking, prefetch room, closing."""

from __future__ import annotations

import anyio
import pytest

from worker.webhooks.base import ClaimedDelivery
from worker.webhooks.slots import AHEAD, Slots

pytestmark = pytest.mark.anyio
LIMITS = {"a": 2, "b": 1}


def item(endpoint: str, n: int) -> ClaimedDelivery:
    return ClaimedDelivery(pk=n, event_id=f"msg_{n}", event_type="call.started",
                           provider="envoy", call_id=f"call_{n}", endpoint=endpoint,
                           body=b"{}", attempt=1, per_call=False)


def slots(low: list[int] | None = None) -> Slots:
    return Slots(LIMITS.__getitem__, on_low=lambda: low.append(1) if low is not None else None)


async def test_no_endpoint_gets_more_than_its_limit_in_flight() -> None:
    """Three queued for an endpoint with limit 2: two are taken, the third waits for done()."""
    queue = slots()
    queue.put([item("a", n) for n in range(3)])
    first, second = await queue.take(), await queue.take()
    assert first is not None and second is not None
    with anyio.move_on_after(0.05) as waited:
        await queue.take()
    assert waited.cancelled_caught
    queue.done(first)
    third = await queue.take()
    assert third is not None and third.pk == 2


async def test_endpoints_take_turns() -> None:
    """A long queue for one endpoint does not starve another: they alternate."""
    queue = Slots(lambda url: 10, on_low=lambda: None)
    queue.put([item("a", n) for n in range(4)] + [item("b", 10 + n) for n in range(2)])
    taken = [await queue.take() for _ in range(4)]
    assert [t.endpoint for t in taken if t is not None] == ["a", "b", "a", "b"]


async def test_room_counts_in_flight_and_waiting_up_to_twice_the_limit() -> None:
    """An endpoint may have its limit in flight and as many again claimed and waiting."""
    queue = slots()
    assert queue.room(["a", "b"]) == {"a": AHEAD * 2, "b": AHEAD * 1}
    queue.put([item("a", 1), item("a", 2), item("a", 3)])
    await queue.take()
    assert queue.room(["b"]) == {"a": AHEAD * 2 - 3, "b": AHEAD * 1}
    assert (queue.total, sum(queue.in_flight.values())) == (3, 1)


async def test_a_short_queue_asks_the_loop_for_more() -> None:
    """Taking from a queue that fell below half the limit calls on_low; a long one not."""
    low: list[int] = []
    queue = slots(low)
    queue.put([item("a", n) for n in range(4)])
    await queue.take()
    assert low == []
    await queue.take()
    queue.put([item("b", 9)])
    await queue.take()
    assert low == [1]


async def test_close_releases_waiting_senders() -> None:
    """After close() take() answers None, so every sender can finish."""
    queue = slots()
    done: list[ClaimedDelivery | None] = []

    async def sender() -> None:
        done.append(await queue.take())

    async with anyio.create_task_group() as tg:
        tg.start_soon(sender)
        tg.start_soon(sender)
        await anyio.sleep(0.01)
        queue.close()
    assert done == [None, None]


def shared_slots(budget: int) -> Slots:
    return Slots(lambda url: 8, on_low=lambda: None, shared=lambda url: url.startswith("call"),
                 shared_limit=lambda: budget)


async def test_per_call_urls_share_one_budget_and_leave_the_configured_alone() -> None:
    """Ten per-call URLs with work and a budget of 3: three are taken, then only the
    configured endpoint's deliveries, however many per-call ones wait."""
    queue = shared_slots(3)
    queue.put([item(f"call-{n}", n) for n in range(10)])
    queue.put([item("configured", 100 + n) for n in range(4)])
    taken = [await queue.take() for _ in range(7)]
    endpoints = [t.endpoint for t in taken if t is not None]
    assert sum(e.startswith("call") for e in endpoints) == 3
    assert endpoints.count("configured") == 4
    assert queue.shared_in_flight == 3
    with anyio.move_on_after(0.05) as waited:
        await queue.take()
    assert waited.cancelled_caught
    done = next(t for t in taken if t is not None and t.endpoint.startswith("call"))
    queue.done(done)
    after = await queue.take()
    assert after is not None and after.endpoint.startswith("call")


def test_shared_room_counts_waiting_and_in_flight_per_call_deliveries() -> None:
    """The per-call claim room is AHEAD times the budget, less what is claimed for them."""
    queue = shared_slots(4)
    assert queue.shared_room == AHEAD * 4
    queue.put([item(f"call-{n}", n) for n in range(5)] + [item("configured", 9)])
    assert queue.shared_room == AHEAD * 4 - 5
