"""uvicorn, embedded in an anyio task group: used by the HTTP API and by the simulator.

uvicorn is built to own its process; here it is a guest. It must report readiness (so
``await tg.start(...)`` returns once it listens), stop promptly when asked, and leave signal
handling to its host (the daemon's own signal task, or a test).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator

import anyio
import uvicorn


class EmbeddedServer(uvicorn.Server):
    """uvicorn that reports readiness, stops promptly, and leaves signals to its host."""

    def __init__(self, config: uvicorn.Config, started: Callable[[], None]) -> None:
        super().__init__(config)
        self._started = started
        self._exit = anyio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self._started()

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000  # a multiple of 10: refresh the Date header
            with anyio.move_on_after(1.0):
                await self._exit.wait()

    def request_exit(self) -> None:
        self.should_exit = True
        self._exit.set()
