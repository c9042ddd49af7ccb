"""Per-call webhooks as an attacker would use them, against a real daemon subprocess.

SSRF: every spelling of an inside address is refused at ``track`` and at the API, and a
URL that got into the database anyway (an older version, a changed policy, a name that
resolves inside) is refused at every attempt; a loopback listener counts every connection
ever made to it and must count none. Isolation: 200 calls whose webhook is a tarpit must
not delay the configured endpoint. And a receiver's ``Retry-After: ²`` is a failed attempt,
recorded, not a crash.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.abc import SocketStream, TaskGroup

from tests.e2e.harness import DaemonUnderTest, wait_until
from tests.e2e.looplag import Control, assert_loop_lag_low
from tests.webhooks.support import emit
from worker.cli import main
from worker.demo import write_config
from worker.model import EventType
from worker.simulator import Simulator, World, run_simulator
from worker.store.sqlite import SQLiteStore

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

QUIET = {"poll_interval": 300, "pending_poll_interval": 300, "recording_poll_interval": 300,
         "recording_grace": 3600, "not_found_grace": 3600, "max_tracking_age": 86400}
TOKEN = "hostile-api-token-77"  # noqa: S105 - a test credential
TWO = (EventType.CALL_STARTED, EventType.CALL_ENDED)


@dataclass
class Listener:
    """A loopback TCP listener that counts connections and holds each open (a tarpit)."""

    port: int = 0
    accepted: int = 0
    open: int = 0
    closed: int = 0
    _streams: list[SocketStream] = field(default_factory=list)

    async def serve(self, tg: TaskGroup) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610
        tg.start_soon(self._serve, listener)

    async def _serve(self, listener: anyio.abc.Listener[SocketStream]) -> None:
        async with listener:  # closed when the fixture cancels us
            await listener.serve(self._hold)

    async def _hold(self, stream: SocketStream) -> None:
        self.accepted += 1
        self.open += 1
        try:
            async with stream:
                while True:  # read and never answer, until the client gives up
                    await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            pass
        finally:
            self.open -= 1
            self.closed += 1

    def url(self, host: str = "127.0.0.1", path: str = "hook") -> str:
        return f"http://{host}:{self.port}/{path}"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(World()) as running:
        yield running


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    found = Listener()
    async with anyio.create_task_group() as tg:
        await found.serve(tg)
        yield found
        tg.cancel_scope.cancel()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def daemon_for(sim: Simulator, tmp_path: Path, *, call_webhooks: str = "",
               hook: str = "", api_port: int | None = None) -> DaemonUnderTest:
    """A daemon sending to the simulator's receiver, with ``[call_webhooks]`` as given."""
    extra = f"\n[call_webhooks]\n{call_webhooks}\n" if call_webhooks else ""
    if api_port is not None:
        extra += f'\n[api]\nlisten = "127.0.0.1:{api_port}"\ntoken_env = "CW_API_TOKEN"\n'
    config, env = write_config(tmp_path, sim, archive=False, webhook=True, tracking=QUIET,
                               extra=extra)
    if hook:  # replace the default [[webhooks]] settings line by line
        text = config.read_text().replace("retry_schedule = [0.5, 1, 2, 4]\ntimeout = 5", hook)
        config.write_text(text)
    return DaemonUnderTest(config=config, env={**env, "CW_API_TOKEN": TOKEN},
                           workdir=tmp_path)


def cli(daemon: DaemonUnderTest, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker", "--config", str(daemon.config),
                           *args], capture_output=True, text=True, env={**daemon.env},
                          check=False)


def spellings(port: int) -> list[str]:
    """Every way of writing an inside address the issue lists, and their cousins."""
    hosts = ["127.0.0.1", "2130706433", "0x7f000001", "0177.0.0.1", "017700000001", "127.1",
             "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "localhost", "LOCALHOST.",
             "0.0.0.0",  # noqa: S104 - a URL under test, not a bind
             "0", "[::1]", "[::]", "169.254.169.254", "[fd00:ec2::254]", "10.0.0.1",
             "192.168.0.1", "100.64.0.1", "[64:ff9b::7f00:1]"]
    urls = [f"http://{host}:{port}/hook" for host in hosts]
    return [*urls, f"http://user:pw@example.com:{port}/hook",
            f"http://example.com:{port}@127.0.0.1:{port}/hook"]


async def test_every_inside_spelling_is_refused_by_track_and_the_api(
        sim: Simulator, tmp_path: Path, listener: Listener, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """track exits 2 and the API answers 400, one line each, for every spelling; no call is
    stored, nothing ever connects to the loopback listener; event-loop lag under 100 ms.

    The first spelling goes through a real ``callwatch track`` process; the others through
    the same command's ``main`` in this process, as an interpreter start per spelling cost
    most of this test's time and checks nothing the first one does not."""
    port = free_port()
    daemon = daemon_for(sim, tmp_path, api_port=port)
    for name, value in daemon.env.items():
        monkeypatch.setenv(name, value)

    def track_in_process(*args: str) -> tuple[int, str]:
        code = main(["--config", str(daemon.config), "track", *args])
        return code, capsys.readouterr().err

    daemon.start()
    assert daemon.proc is not None
    stalls = Control(daemon.proc.pid)
    try:
        await daemon.wait_ready()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            for n, url in enumerate(spellings(listener.port)):
                argv = ("envoy", f"call_cli_{n}", "--webhook", url)
                if n == 0:
                    result = cli(daemon, "track", *argv)
                    code, err = result.returncode, result.stderr
                else:
                    code, err = await anyio.to_thread.run_sync(track_in_process, *argv)
                assert code == 2, (url, err)
                assert err.count("\n") == 1 and "--webhook" in err, url
                reply = await api.post("/v1/calls", json={
                    "provider": "envoy", "call_id": f"call_api_{n}", "webhook": url})
                assert reply.status_code == 400, (url, reply.text)
                assert reply.json()["error"].startswith("webhook "), url
        assert_loop_lag_low(port, TOKEN, stalls)
    finally:
        stalls.stop()
        assert await daemon.stop() == 0
    store = await SQLiteStore.open(daemon.db)
    try:
        assert (await store.counts()).calls_by_state == {}
    finally:
        await store.close()
    assert listener.accepted == 0


async def test_a_stored_inside_url_fails_every_attempt_and_never_connects(
        sim: Simulator, tmp_path: Path, listener: Listener) -> None:
    """URLs that reached the database anyway (written directly, as an older version or a
    looser policy would have; one by a DNS name that resolves to this machine) fail each
    attempt with the reason, are retried on schedule and die; the configured endpoint gets
    everything; nothing connects. With allow_private the same deliveries do connect (so
    the listener would have seen them)."""
    hook = "retry_schedule = [0.2, 0.2]\ntimeout = 2"
    daemon = daemon_for(sim, tmp_path, hook=hook, call_webhooks="allow_private = false")
    store = await SQLiteStore.open(daemon.db)
    try:
        sneaky = [listener.url(), listener.url("127.1")]
        if _resolves(socket.gethostname()):  # a name, not an address: caught by resolution
            sneaky.append(listener.url(socket.gethostname()))
        for n, url in enumerate(sneaky):
            await emit(store, f"call_{n}", TWO, webhook=url, now=time.time())
    finally:
        await store.close()
    daemon.start()
    try:
        await daemon.wait_ready()
        await sim.sink.wait_for(lambda r: len(r) >= 2 * len(sneaky), timeout=15)
        await wait_until(lambda: _dead_per_call(daemon) >= 2 * len(sneaky), 20,
                         "per-call deliveries dead after their attempts", daemon)
        listing = json.loads(cli(daemon, "deliveries", "--dead", "--json").stdout)
    finally:
        assert await daemon.stop() == 0
    assert listener.accepted == 0
    assert all(d["attempts"] == 3 and "refused" in (d["last_error"] or "")
               for d in listing)
    failed = [line for line in daemon.log_lines() if line.get("event") == "delivery.failed"]
    assert failed and all("refused" in str(line.get("reason")) for line in failed)
    assert not [line for line in daemon.log_lines() if line.get("event") == "delivery.crashed"]

    # The control: allowed, the very same deliveries reach the listener.
    daemon.config.write_text(daemon.config.read_text().replace("allow_private = false",
                                                               "allow_private = true"))
    assert cli(daemon, "replay", "--dead").returncode == 0
    daemon.start()
    try:
        await wait_until(lambda: listener.accepted > 0, 15, "a connection when allowed", daemon)
    finally:
        assert await daemon.stop() == 0


def _resolves(host: str) -> bool:
    try:
        return bool(socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM))
    except OSError:
        return False


def _dead_per_call(daemon: DaemonUnderTest) -> int:
    result = cli(daemon, "deliveries", "--dead", "--json")
    return len(json.loads(result.stdout)) if result.returncode == 0 else 0


async def test_a_tarpit_per_call_webhook_never_delays_the_configured_endpoint(
        sim: Simulator, tmp_path: Path, listener: Listener) -> None:
    """200 calls whose webhook accepts and never answers (60 s timeout): every delivery to
    the configured endpoint, and a canary written afterwards, arrive while the tarpit still
    holds its connections (no tarpit attempt has even timed out), and the tarpit never holds
    more than the per-call budget; event-loop lag under 100 ms."""
    hook = "retry_schedule = [60]\ntimeout = 60"
    port = free_port()
    daemon = daemon_for(sim, tmp_path, hook=hook, api_port=port,
                        call_webhooks="allow_private = true\nmax_in_flight = 16")
    # The stop finds the tarpit still holding its attempts: it waits drain_grace, then cuts
    # them short. That wait (20 s by default) is not what this test is about.
    daemon.config.write_text(daemon.config.read_text().replace(
        'database = "callwatch.db"', 'database = "callwatch.db"\ndrain_grace = 1', 1))
    store = await SQLiteStore.open(daemon.db)
    try:
        for n in range(200):
            await emit(store, f"call_{n}", TWO, webhook=listener.url(path=f"tarpit/{n}"),
                       now=time.time())
    finally:
        await store.close()
    daemon.start()
    assert daemon.proc is not None
    stalls = Control(daemon.proc.pid)
    try:
        await daemon.wait_ready()
        await wait_until(lambda: listener.open >= 16, 20, "the tarpit full", daemon)
        store = await SQLiteStore.open(daemon.db)
        try:
            (canary, _) = await emit(store, "call_canary", TWO, now=time.time())
        finally:
            await store.close()
        await sim.sink.wait_for(lambda r: any(x.header("webhook-id") == canary for x in r)
                                and len(r) >= 2 * 201, timeout=40)
        held, finished, accepted = listener.open, listener.closed, listener.accepted
        assert_loop_lag_low(port, TOKEN, stalls)
    finally:
        stalls.stop()
        assert await daemon.stop() == 0
    assert finished == 0  # every configured delivery arrived before any tarpit attempt ended
    assert any(line.get("event") == "daemon.drain_cut_short" for line in daemon.log_lines())
    assert 0 < held <= 16 and accepted <= 16
    assert len({r.header("webhook-id") for r in sim.sink.requests}) >= 402


async def test_retry_after_superscript_two_is_a_recorded_failure(
        sim: Simulator, tmp_path: Path) -> None:
    """A receiver answering 429 with ``Retry-After: ²`` gets its attempts recorded and
    retried on the schedule until dead (it used to crash the delivery, unrecorded, forever)."""
    sim.sink.behave(status=429, retry_after="\u00b2")
    daemon = daemon_for(sim, tmp_path, hook="retry_schedule = [0.2, 0.2]\ntimeout = 2")
    daemon.start()
    try:
        await daemon.wait_ready()
        store = await SQLiteStore.open(daemon.db)
        try:
            await emit(store, "call_1", (EventType.CALL_STARTED,), now=time.time())
        finally:
            await store.close()
        await wait_until(lambda: _dead_per_call(daemon) >= 1, 20, "the delivery dead", daemon)
        listing = json.loads(cli(daemon, "deliveries", "--dead", "--json").stdout)
    finally:
        assert await daemon.stop() == 0
    (dead,) = listing
    assert dead["attempts"] == 3 and dead["last_status"] == 429
    assert [r.status for r in sim.sink.requests] == [429, 429, 429]
    assert not [line for line in daemon.log_lines() if line.get("event") == "delivery.crashed"]
