"""Writing through a database that refuses for a while (locked, disk full).

The scheduler, the relay and the archiver all hold work that must reach the database: the
results stay in memory and their leases keep the rows safe meanwhile, so the right answer to
a refusal is to wait and write again, never to drop the work. One back-off for all of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
from structlog.typing import FilteringBoundLogger

T = TypeVar("T")
FIRST_DELAY = 0.5
MAX_DELAY = 30.0


async def until_written(operation: Callable[[], Awaitable[T]], log: FilteringBoundLogger,
                        **context: Any) -> T:
    """``await operation()`` until it succeeds, logging each refusal as ``store.write_failed``
    (with ``context``) and waiting 0.5 s, doubling up to 30 s, before the next try."""
    delay = FIRST_DELAY
    while True:
        try:
            return await operation()
        except Exception as exc:
            log.exception("store.write_failed", **context, error=str(exc), retry_in=delay)
        await anyio.sleep(delay)
        delay = min(delay * 2, MAX_DELAY)
