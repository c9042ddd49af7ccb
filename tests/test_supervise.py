"""The watchdog is fed only while the health verdict is ok (a real notify socket, a real store)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import anyio
import pytest
import structlog

from tests.api.support import IdleComponent
from tests.e2e.harness import wait_until
from worker.notify import Notifier
from worker.store.sqlite import SQLiteStore
from worker.supervise import supervise

pytestmark = pytest.mark.anyio


@dataclass(eq=False)
class Loop(IdleComponent):
    """A component whose progress the test sets."""

    name = "scheduler"
    last: float = field(default_factory=time.monotonic)
    stats: None = None

    def progress(self) -> float | None:
        return self.last


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[tuple[socket.socket, Notifier]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    notifier = Notifier(path, watchdog_usec=200_000)  # ping every 0.1 s
    yield sock, notifier
    notifier.close()
    sock.close()


def pings(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            count += b"WATCHDOG=1" in sock.recv(4096)
        except BlockingIOError:
            return count


async def until(check: Callable[[], bool]) -> None:
    await wait_until(check, 30, "the supervisor")


async def test_pings_stop_while_unhealthy_and_resume_after(
        store: SQLiteStore, notify: tuple[socket.socket, Notifier]) -> None:
    """A loop stuck past the limit, or a writer that cannot commit: no WATCHDOG=1."""
    sock, notifier = notify
    loop = Loop()
    held: list[float | None] = [None]
    with structlog.testing.capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(supervise, notifier, store, [loop],
                                  uncommitted_since=lambda: held[0],
                                  providers=lambda: ["ultravox"]))
            await until(lambda: pings(sock) >= 1)  # healthy: fed

            def verdicts(name: str) -> int:
                return sum(entry["event"] == name for entry in logs)

            for stuck in ("loop", "writer"):
                if stuck == "loop":
                    loop.last = time.monotonic() - 60  # stuck for a minute (limit: 10 s)
                else:
                    held[0] = time.monotonic() - 120  # results held for two minutes
                before = verdicts("daemon.unhealthy")

                def noticed(before: int = before) -> bool:
                    return verdicts("daemon.unhealthy") > before

                await until(noticed)
                pings(sock)  # sent before the check noticed
                await anyio.sleep(0.5)  # five ping intervals
                assert pings(sock) == 0
                loop.last, held[0] = time.monotonic() + 3600, None
                await until(lambda: pings(sock) >= 1)  # healthy again: fed again
            tg.cancel_scope.cancel()
