"""A transient refusal is retried with back-off; a permanent one is isolated, never looped."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from worker.store import retry
from worker.store.errors import PermanentStoreError, TransientStoreError

pytestmark = pytest.mark.anyio


async def test_refusals_are_logged_and_retried_until_the_write_succeeds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Transient errors (disk full, locked) are waited out with a doubling delay."""
    monkeypatch.setattr(retry, "FIRST_DELAY", 0.01)
    answers: list[Exception | str] = [TransientStoreError("database or disk is full"),
                                      TransientStoreError("database is locked"), "done"]

    async def write() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with capture_logs() as logs:
        result = await retry.until_written(write, structlog.get_logger(), calls=3)
    assert result == "done" and answers == []
    failed = [e for e in logs if e["event"] == "store.write_failed"]
    assert [(e["calls"], e["retry_in"], e["error"]) for e in failed] == [
        (3, 0.01, "database or disk is full"), (3, 0.02, "database is locked")]


async def test_a_permanent_error_is_raised_at_once_not_retried() -> None:
    """A constraint or unstorable data fails the same way every time: one try only."""
    tries = 0

    async def write() -> None:
        nonlocal tries
        tries += 1
        raise PermanentStoreError("NOT NULL constraint failed")

    with pytest.raises(PermanentStoreError):
        await retry.until_written(write, structlog.get_logger())
    assert tries == 1


async def isolate(items: list[int], bad: set[int]) -> tuple[list[int], list[int], int]:
    """Run ``write_isolating`` over ``items`` where a batch fails if it holds a ``bad`` item."""
    written: list[int] = []
    aside: list[int] = []
    writes = 0

    async def write(batch: Sequence[int]) -> None:
        nonlocal writes
        writes += 1
        if bad & set(batch):
            raise PermanentStoreError("cannot encode")
        written.extend(batch)

    async def set_aside(item: int, error: PermanentStoreError) -> None:
        aside.append(item)

    count = await retry.write_isolating(items, write, set_aside, structlog.get_logger())
    assert count == len(aside)
    return written, aside, writes


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 64), data=st.data())
def test_bisection_sets_aside_exactly_the_bad_items_and_writes_the_rest(
        n: int, data: st.DataObject) -> None:
    """Every good item is written once, every bad one set aside, in a bounded number of
    writes, whatever the batch and wherever the bad items sit."""
    import anyio

    items = list(range(n))
    bad = set(data.draw(st.lists(st.sampled_from(items), max_size=3)))
    written, aside, writes = anyio.run(isolate, items, bad)
    assert sorted(written) == [i for i in items if i not in bad]
    assert sorted(aside) == sorted(bad)
    assert writes <= 1 + 2 * max(1, len(bad)) * n.bit_length() * 2
