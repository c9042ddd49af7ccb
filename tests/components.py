"""Running one of the daemon's components inside a test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio

from worker.component import AnyComponent as Component

C = TypeVar("C", bound=Component)


@asynccontextmanager
async def started(component: C) -> AsyncIterator[C]:
    """``component`` running (started, as the daemon starts it) until the block ends, then
    stopped; leaving the block waits for it to drain."""
    async with anyio.create_task_group() as tg:
        await tg.start(component.run)
        try:
            yield component
        finally:
            component.stop()
