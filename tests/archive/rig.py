"""The archiver in this process, with the real scheduler, store, adapters and HTTP client,
against the simulator over loopback: every byte crosses a real socket."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.abc import TaskGroup

from worker.archive.archiver import Archiver
from worker.archive.disk import FileOps
from worker.config import Config, load
from worker.daemon import http_client, lanes_for
from worker.demo import write_config
from worker.model import TrackedCall
from worker.scheduler import Scheduler
from worker.simulator import Simulator, World, run_simulator
from worker.simulator.signing import Verdict
from worker.simulator.world import CallScript
from worker.store.base import NewCall, StoredEvent
from worker.store.sqlite import SQLiteStore

FAST = {
    "poll_interval": 0.2,
    "pending_poll_interval": 0.2,
    "recording_poll_interval": 0.2,
    "recording_grace": 30,
    "not_found_grace": 10,
    "max_tracking_age": 300,
}
DEFAULT_ARCHIVE = {"timeout": 5, "max_attempts": 3}


@dataclass
class Rig:
    """A running scheduler + archiver pair and what a test needs to watch them."""

    sim: Simulator
    config: Config
    store: SQLiteStore
    scheduler: Scheduler
    archiver: Archiver
    task_group: TaskGroup
    gets: Counter[str] = field(default_factory=Counter)  # file-store requests per object path

    async def start_archiver(self) -> None:
        await self.task_group.start(self.archiver.run)

    @property
    def archive_dir(self) -> Path:
        assert self.config.worker.archive_dir is not None
        return self.config.worker.archive_dir

    async def track(self, *scripts: CallScript) -> None:
        for script in scripts:
            await self.store.track(NewCall(provider=script.provider, call_id=script.call_id),
                                   time.time())
        self.scheduler.wake()

    async def call(self, script: CallScript) -> TrackedCall:
        found = await self.store.get_call(script.provider, script.call_id)
        assert found is not None
        return found

    async def settled(self, *scripts: CallScript, timeout: float = 15.0) -> list[TrackedCall]:
        """Wait until every call is terminal; return them."""
        with anyio.fail_after(timeout):
            while True:
                calls = [await self.call(s) for s in scripts]
                if all(c.terminal is not None for c in calls):
                    return calls
                await anyio.sleep(0.05)

    async def events(self, script: CallScript) -> list[StoredEvent]:
        return await self.store.call_events(script.provider, script.call_id)

    def object_gets(self, script: CallScript, index: int = 0) -> int:
        """File-store requests for one recording's object."""
        path = self.sim.signer.object_path(script.provider, script.call_id,
                                           script.recordings[index])
        return self.gets[path]

    def files(self) -> list[Path]:
        """Final files under the archive (scratch files excluded)."""
        return sorted(p for p in self.archive_dir.rglob("*")
                      if p.is_file() and ".partial" not in p.relative_to(self.archive_dir).parts)

    def partials(self) -> list[Path]:
        scratch = self.archive_dir / ".partial"
        return sorted(scratch.iterdir()) if scratch.exists() else []


def count_gets(sim: Simulator) -> Counter[str]:
    """Count every request the file store checks a signature for, per object path."""
    gets: Counter[str] = Counter()
    verify = sim.signer.verify

    def counting(raw_path: bytes, query: bytes, now: float) -> Verdict:
        gets[raw_path.decode()] += 1
        return verify(raw_path, query, now)

    sim.signer.verify = counting  # type: ignore[method-assign]
    return gets


def _archive_section(archive: Mapping[str, object]) -> str:
    values = {**DEFAULT_ARCHIVE, **archive}
    return "\n[archive]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())


@asynccontextmanager
async def archive_rig(tmp_path: Path, *, archive: Mapping[str, object] | None = None,
                      world: World | None = None, link_ttl: int = 300,
                      ops: FileOps | None = None, start_archiver: bool = True,
                      ) -> AsyncIterator[Rig]:
    """Simulator, store, scheduler and (unless told otherwise) a running archiver."""
    async with run_simulator(world or World(), link_ttl=link_ttl) as sim:
        path, env = write_config(tmp_path, sim, archive=True, webhook=False, tracking=FAST,
                                 extra=_archive_section(archive or {}))
        config = load(path, env)
        assert config.worker.archive_dir is not None
        store = await SQLiteStore.open(Path(config.worker.database))
        try:
            async with http_client(config) as client, anyio.create_task_group() as tg:
                scheduler = Scheduler(store, lanes_for(config, client), idle_wait=0.1)
                archiver = Archiver(store=store, lanes=scheduler.lanes, client=client,
                                    archive_dir=config.worker.archive_dir, config=config.archive,
                                    retry_base=0.05, probe_interval=0.1, idle_wait=0.1, ops=ops)
                scheduler.on_commit(archiver.wake)
                rig = Rig(sim=sim, config=config, store=store, scheduler=scheduler,
                          archiver=archiver, task_group=tg, gets=count_gets(sim))
                await tg.start(scheduler.run)
                if start_archiver:
                    await rig.start_archiver()
                try:
                    yield rig
                finally:
                    scheduler.stop()
                    archiver.stop()
                    tg.cancel_scope.deadline = anyio.current_time() + 10  # then cancel them
        finally:
            await store.close()
