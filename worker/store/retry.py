"""Writing through a database that refuses: wait out what passes, isolate what never will.

The scheduler, the relay and the archiver all hold work that must reach the database: the
results stay in memory and their leases keep the rows safe meanwhile, so the right answer to
a *transient* refusal (locked, disk full, connection lost) is to wait and write again, never
to drop the work. One back-off for all of them.

A *permanent* refusal (``PermanentStoreError``: a constraint, data that cannot be stored)
fails the same way every time, so it is never retried as it is: ``until_written`` raises it,
and ``write_isolating`` narrows a batch down (bisection) to the items that cause it, hands
those to a callback that sets them aside, and commits the rest. No deterministic error can
hold a batch, or the items behind it, forever.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio
from structlog.typing import FilteringBoundLogger

from worker.store.errors import PermanentStoreError, TransientStoreError

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - an item of a batch
FIRST_DELAY = 0.5
MAX_DELAY = 30.0


async def until_written(operation: Callable[[], Awaitable[T]], log: FilteringBoundLogger,
                        *, on_failure: Callable[[], None] | None = None, **context: Any) -> T:
    """``await operation()`` until it succeeds, while it fails with a transient error.

    Each transient refusal is logged as ``store.write_failed`` (with ``context``), calls
    ``on_failure`` and waits 0.5 s, doubling up to 30 s, before the next try. Any other
    error (``PermanentStoreError`` above all) is raised at once.
    """
    delay = FIRST_DELAY
    while True:
        try:
            return await operation()
        except TransientStoreError as exc:
            log.warning("store.write_failed", **context, error=str(exc), retry_in=delay)
            if on_failure is not None:
                on_failure()
        await anyio.sleep(delay)
        delay = min(delay * 2, MAX_DELAY)


async def write_isolating(items: Sequence[I], write: Callable[[Sequence[I]], Awaitable[None]],
                          set_aside: Callable[[I, PermanentStoreError], Awaitable[None]],
                          log: FilteringBoundLogger, *,
                          on_failure: Callable[[], None] | None = None) -> int:
    """Write ``items``; if the batch fails permanently, write its halves, down to the items
    that fail alone, which go to ``set_aside``. Transient errors are waited out at every
    level. Returns how many items were set aside.

    A batch of n items with one bad item costs about 2·log2(n) extra writes, once.
    """
    try:
        await until_written(lambda: write(items), log, on_failure=on_failure,
                            items=len(items))
    except PermanentStoreError as exc:
        if len(items) == 1:
            await set_aside(items[0], exc)
            return 1
        log.warning("store.batch_refused", items=len(items), error=str(exc),
                    hint="narrowing the batch down to the items that cause it")
        middle = len(items) // 2
        return (await write_isolating(items[:middle], write, set_aside, log,
                                      on_failure=on_failure)
                + await write_isolating(items[middle:], write, set_aside, log,
                                        on_failure=on_failure))
    return 0
