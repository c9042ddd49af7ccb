"""Shared pieces of the API tests: a config, a runtime over a real store, and Ultravox signing."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

from tests.components import started
from worker.api.server import ApiServer
from worker.archive.archiver import ArchiverStats
from worker.archive.base import DownloadJob, DownloadProgress
from worker.component import AnyComponent
from worker.config import Config, parse
from worker.looplag import LoopLagStats
from worker.scheduler import SchedulerStats
from worker.store.sqlite import SQLiteStore
from worker.webhooks.stats import RelayStats

TOKEN = "test-api-token-5f1e"  # noqa: S105 - a test credential
HOOK_SECRET = "test-ultravox-webhook-secret"  # noqa: S105
ENVIRON = {"API_TOKEN": TOKEN, "UV_HOOK": HOOK_SECRET, "UV_KEY": "k", "ENVOY_KEY": "k"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UV_ID = "6f1c2a9e-5b8d-4f3e-9a0b-2c4d6e8f0a1b"
ENVOY_ID = "call_0b9e6f52-3c1d-4e7a-9f20-5d8c7b6a4e31"


def make_config(tmp_path: Path, *, hook_secret: bool = True) -> Config:
    """ultravox and envoy configured (apifycloud is not), the API on with a token."""
    api: dict[str, Any] = {"listen": "127.0.0.1:8787", "token_env": "API_TOKEN"}
    if hook_secret:
        api["ultravox_webhook_secret_env"] = "UV_HOOK"  # noqa: S105 - a variable name
    data = {
        "worker": {"database": "callwatch.db"},
        "providers": {
            "ultravox": {"base_url": "http://127.0.0.1:9", "api_key_env": "UV_KEY"},
            "envoy": {"base_url": "http://127.0.0.1:9", "api_key_env": "ENVOY_KEY"},
        },
        "api": api,
    }
    return parse(data, tmp_path / "callwatch.toml", ENVIRON)


class IdleComponent:
    """A component that does nothing; subclasses say what they report."""

    name = "idle"

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    def stop(self) -> None:
        pass

    def progress(self) -> float | None:
        return None

    def describe(self) -> str:
        return ""

    def reconfigure(self, config: Config) -> None:
        del config


@dataclass(eq=False)
class RecordingScheduler(IdleComponent):
    """The scheduler's face as the API sees it, remembering every wake-up."""

    name = "scheduler"
    stats: SchedulerStats = field(default_factory=SchedulerStats)
    woken: list[str | None] = field(default_factory=list)

    def wake(self, provider: str | None = None) -> None:
        self.woken.append(provider)

    def progress(self) -> float | None:
        return self.stats.last_progress


@dataclass(eq=False)
class FakeRelay(IdleComponent):
    """Stands in for the webhook relay: its typed stats, and progress that a test can age."""

    name = "relay"
    stats: RelayStats = field(default_factory=RelayStats)
    last_progress: float = field(default_factory=time.monotonic)

    def progress(self) -> float | None:
        return self.last_progress


@dataclass(eq=False)
class FakeArchiver(IdleComponent):
    """Stands in for the archiver: its typed stats."""

    name = "archiver"
    stats: ArchiverStats = field(default_factory=ArchiverStats)
    live: list[tuple[DownloadJob, DownloadProgress]] = field(default_factory=list)

    def downloads(self) -> list[tuple[DownloadJob, DownloadProgress]]:
        return list(self.live)


@dataclass
class TestRuntime:
    """What the daemon's Runtime offers the API, with a recording scheduler."""

    __test__ = False  # not a pytest test class

    config: Config
    store: SQLiteStore
    scheduler: RecordingScheduler = field(default_factory=RecordingScheduler)
    relay: FakeRelay | None = None
    archiver: FakeArchiver | None = None
    loop_lag: LoopLagStats | None = None
    store_errors: Counter[str] | None = None
    started_wall: float = field(default_factory=time.time)

    @property
    def components(self) -> list[AnyComponent]:
        parts: list[AnyComponent] = [self.scheduler]
        parts.extend(part for part in (self.relay, self.archiver) if part is not None)
        return parts


def ultravox_headers(body: bytes, *secrets: str, at: datetime | None = None,
                     skew: float = 0.0) -> dict[str, str]:
    """Headers as Ultravox sends them (its documented recipe, written independently here)."""
    moment = (at or datetime.now(UTC)) + timedelta(seconds=skew)
    stamp = moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
    signatures = [hmac.new(s.encode(), body + stamp.encode(), hashlib.sha256).hexdigest()
                  for s in secrets]
    return {"X-Ultravox-Webhook-Timestamp": stamp,
            "X-Ultravox-Webhook-Signature": ",".join(signatures)}


@asynccontextmanager
async def serving(runtime: TestRuntime, listen: str) -> AsyncIterator[ApiServer]:
    """The API listening on ``listen`` until the block ends."""
    async with started(ApiServer(runtime, listen=listen)) as api:
        yield api
