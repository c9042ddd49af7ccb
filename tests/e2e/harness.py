"""End-to-end plumbing: the simulator in this process, the daemon as a real subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from worker.demo import start_daemon, stop_daemon
from worker.store.base import StoredEvent
from worker.store.sqlite import SQLiteStore


@dataclass
class DaemonUnderTest:
    """One daemon subprocess (restartable) with its config, env, log and database."""

    config: Path
    env: Mapping[str, str]
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    log_offset: int = 0  # where the log of the process started last begins

    @property
    def db(self) -> Path:
        return self.workdir / "callwatch.db"

    @property
    def log(self) -> Path:
        return self.workdir / "daemon.log"

    def start(self) -> None:
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        self.proc = start_daemon(self.config, self.env, self.log)
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs."""
        assert self.proc is not None
        self.proc.kill()
        self.exit_codes.append(self.proc.wait())

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait without blocking the event loop (the simulator shares it)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await anyio.sleep(0.05)  # a child's exit is no event we can await here
        code = stop_daemon(self.proc, timeout=1.0)
        self.exit_codes.append(code)
        self.proc = None
        return code

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for raw in self.log.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                lines.append({"event": "non-json", "text": raw})
        return lines

    def ready_since_start(self) -> bool:
        """Has the process started last said daemon.ready? (An earlier one may never have.)"""
        with self.log.open("rb") as log:
            log.seek(self.log_offset)
            return b'"event": "daemon.ready"' in log.read()

    async def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait until the current process has said daemon.ready."""
        await wait_until(self.ready_since_start, timeout, "daemon.ready", self)

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


async def read_events(db: Path) -> list[StoredEvent]:
    store = await SQLiteStore.open(db)
    try:
        return await store.events_after(0, 1_000_000)
    finally:
        await store.close()


async def wait_until(check: Callable[[], object], timeout: float, what: str,
                     daemon: DaemonUnderTest | None = None) -> None:
    """Poll an async-free or async check until it is truthy, else fail with the daemon log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if hasattr(result, "__await__"):
            result = await result
        if result:
            return
        await anyio.sleep(0.1)
    tail = daemon.log_tail() if daemon else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")
