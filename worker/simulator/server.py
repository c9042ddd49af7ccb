"""Run the simulator: one uvicorn server per role, on loopback, inside an anyio task group.

    async with run_simulator(world) as sim:
        sim.base_urls["ultravox"]    # "http://127.0.0.1:PORT", an origin like the real base URL
        sim.files_url, sim.sink_url, sim.control_url

Each provider gets its own port, so its base URL is an origin with the documented paths under
it. Sockets are bound here (port 0) and handed to uvicorn, so the port is known before anyone
connects. uvicorn does not touch signals or logging config: the host process (a test, the
daemon's ``demo``, the standalone ``__main__``) owns both.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from anyio.abc import TaskGroup, TaskStatus

from worker.embedded_server import EmbeddedServer
from worker.simulator.apifycloud import apifycloud_app
from worker.simulator.asgi import Receive, Scope, Send
from worker.simulator.concurrency import Concurrency
from worker.simulator.control import ControlApp
from worker.simulator.envoy import envoy_app
from worker.simulator.faults import API_FAULTS, DOWNLOAD_FAULTS, Faults
from worker.simulator.files import FileStore, quiet_intentional_cuts
from worker.simulator.signing import Signer
from worker.simulator.sink import Sink
from worker.simulator.ultravox import ultravox_app
from worker.simulator.world import PROVIDERS, World

DEFAULT_API_KEYS = {"ultravox": "sim-ultravox-key", "envoy": "sim-envoy-token"}
App = Callable[[Scope, Receive, Send], Any]


class _Server(EmbeddedServer):
    """The embedded uvicorn, with a faster shutdown for tests that start hundreds of them."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown without its fixed 0.1 s pause (tests start hundreds of these)."""
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()  # closes idle keep-alive connections, ends busy ones after
        with anyio.move_on_after(self.config.timeout_graceful_shutdown or 0):
            while state.connections or state.tasks:  # noqa: ASYNC110 - uvicorn's sets, no event
                await anyio.sleep(0.01)
        for task in list(state.tasks):  # past the grace period: a stalled or slow reply
            task.cancel()
        for connection in list(state.connections):
            connection.transport.close()


class _Role:
    """One listening server (a provider, the file store, the sink...) that can stop and restart
    on the same port."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.port = 0
        self._server: _Server | None = None
        self._stopped: anyio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self, tg: TaskGroup) -> None:
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
        # without it Nagle + delayed ACK add 40 ms to every keep-alive reply.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            log_config=None,
            access_log=False,
            lifespan="off",
            http="httptools",
            timeout_keep_alive=30,
            timeout_graceful_shutdown=1,
            proxy_headers=False,
        )
        await tg.start(self._serve, config, sock)

    async def _serve(
        self, config: uvicorn.Config, sock: socket.socket, *, task_status: TaskStatus[None]
    ) -> None:
        self._stopped = stopped = anyio.Event()
        self._server = _Server(config, started=task_status.started)
        try:
            await self._server.serve(sockets=[sock])
        finally:
            sock.close()
            self._server = None
            stopped.set()

    def request_stop(self) -> None:
        if self._server is not None:
            self._server.request_exit()

    async def stop(self) -> None:
        self.request_stop()
        if self._stopped is not None:
            await self._stopped.wait()


@dataclass(kw_only=True)
class Simulator:
    """A running simulator: its world, URLs, keys, fault rules and webhook sink."""

    world: World
    signer: Signer
    sink: Sink
    faults: dict[str, Faults]  # "ultravox", "envoy", "apifycloud", "files"
    api_keys: dict[str, str]
    _roles: dict[str, _Role] = field(default_factory=dict)
    _tg: TaskGroup | None = None
    # Requests in flight per provider path (one path, one call): see simulator/concurrency.py
    concurrency: Concurrency = field(default_factory=Concurrency)

    @property
    def base_urls(self) -> dict[str, str]:
        return {name: self._roles[name].url for name in PROVIDERS}

    @property
    def files_url(self) -> str:
        return self._roles["files"].url

    @property
    def sink_url(self) -> str:
        """Where webhooks go; any path under the sink's origin is recorded too."""
        return self._roles["sink"].url + "/hooks"

    @property
    def control_url(self) -> str:
        return self._roles["control"].url

    async def sink_down(self) -> None:
        """Stop the sink's server: connections are refused until ``sink_up``."""
        await self._roles["sink"].stop()

    async def sink_up(self) -> None:
        """Listen again, on the same port (a no-op while it is up)."""
        if self._tg is None:
            raise RuntimeError("the simulator is not running")
        if not self._roles["sink"].running:
            await self._roles["sink"].start(self._tg)

    def describe(self) -> dict[str, Any]:
        """URLs and keys as JSON: what the standalone mode writes to its port file."""
        return {
            "base_urls": self.base_urls,
            "files_url": self.files_url,
            "sink_url": self.sink_url,
            "control_url": self.control_url,
            "api_keys": dict(self.api_keys),
        }


def _apps(sim: Simulator, ultravox_rate_limit: float | None) -> dict[str, App]:
    """One ASGI app per role, all sharing the simulator's world, signer and faults."""
    world, signer, keys, faults = sim.world, sim.signer, sim.api_keys, sim.faults
    counted = sim.concurrency.wrap
    return {
        "ultravox": counted("ultravox", ultravox_app(
            world,
            signer,
            api_key=keys["ultravox"],
            rate_limit=ultravox_rate_limit,
            faults=faults["ultravox"],
        )),
        "envoy": counted("envoy", envoy_app(world, signer, api_key=keys["envoy"],
                                            faults=faults["envoy"])),
        "apifycloud": counted("apifycloud", apifycloud_app(world, signer,
                                                           faults=faults["apifycloud"])),
        "files": FileStore(world, signer, faults["files"]),
        "sink": sim.sink,
        "control": ControlApp(sim),
    }


@contextlib.asynccontextmanager
async def run_simulator(
    world: World | None = None,
    *,
    link_ttl: int = 300,
    ultravox_rate_limit: float | None = 200.0,
    api_keys: Mapping[str, str] | None = None,
    seed: int = 0,
) -> AsyncIterator[Simulator]:
    """Serve the simulator until the block exits.

    ``link_ttl`` is the signed links' lifetime in seconds (X-Goog-Expires and friends);
    ``ultravox_rate_limit`` requests/s per key before 429 (None: unlimited); ``seed`` seeds
    every target's fault draws.
    """
    faults = {name: Faults(API_FAULTS, seed=seed) for name in PROVIDERS}
    faults["files"] = Faults(DOWNLOAD_FAULTS, seed=seed)
    sim = Simulator(
        world=world if world is not None else World(),
        signer=Signer(ttl=link_ttl),
        sink=Sink(),
        faults=faults,
        api_keys={**DEFAULT_API_KEYS, **(api_keys or {})},
    )
    apps = _apps(sim, ultravox_rate_limit)
    quiet_intentional_cuts()
    error: Exception | None = None
    async with anyio.create_task_group() as tg:
        sim._tg = tg
        try:
            for name, app in apps.items():
                sim._roles[name] = role = _Role(app)
                await role.start(tg)
            sim.signer.base_url = sim.files_url
            yield sim
        except Exception as exc:  # re-raised below, outside the group, so it is not wrapped
            error = exc
        finally:
            sim._tg = None
            for role in sim._roles.values():
                role.request_stop()
    if error is not None:
        raise error
