"""The API server under hostile clients, against a real daemon subprocess on loopback."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from tests.e2e.harness import DaemonUnderTest, wait_until
from tests.e2e.test_api import TOKEN, api_daemon, free_port
from worker.simulator import Simulator, World, run_simulator

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

HEAD_TIMEOUT = 10.0  # worker.api.server.HEAD_TIMEOUT: the daemon's, not ours to change


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(World()) as running:
        yield running


@pytest.fixture
async def daemon(sim: Simulator, tmp_path: Path) -> AsyncIterator[tuple[DaemonUnderTest, int]]:
    """A daemon with the API on a free loopback port, ready."""
    port = free_port()
    running = api_daemon(sim, tmp_path, port)
    running.start()
    try:
        await running.wait_ready()
        yield running, port
    finally:
        await running.stop()


def rss_kib(daemon: DaemonUnderTest) -> int:
    """The daemon's resident memory, from /proc."""
    assert daemon.proc is not None
    for line in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def healthz(port: int) -> int:
    async with httpx.AsyncClient(timeout=10) as http:
        reply = await http.get(f"http://127.0.0.1:{port}/healthz")
    assert reply.status_code == 200, reply.text
    return reply.status_code


async def test_a_huge_header_is_refused_and_memory_stays_bounded(
        daemon: tuple[DaemonUnderTest, int]) -> None:
    """8 MB of one header: refused with a 400 after the head cap; RSS grows by < 30 MB."""
    running, port = daemon
    before = rss_kib(running)
    chunk = b"a" * 65536
    sent = 0
    reply = b""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(128):  # 8 MiB, unless the daemon hangs up first
                await stream.send(chunk)
                sent += len(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        with anyio.fail_after(10):
            try:
                reply = await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                reply = b""
    assert reply == b"" or reply.startswith(b"HTTP/1.1 400"), reply[:80]
    assert rss_kib(running) - before < 30 * 1024
    assert await healthz(port) == 200


async def test_slow_loris_connections_do_not_take_healthz_down(
        daemon: tuple[DaemonUnderTest, int]) -> None:
    """300 connections dribbling a request head from one address: /healthz keeps answering."""
    _, port = daemon
    socks: list[socket.socket] = []
    try:
        for _ in range(300):  # more than the daemon's 256 connections
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            socks.append(sock)
        for _ in range(6):
            for sock in socks:
                with contextlib.suppress(OSError):  # evicted or timed out: as intended
                    sock.sendall(b"X-a: b\r\n")  # never the blank line that ends the head
            assert await healthz(port) == 200
            await anyio.sleep(1.0)
    finally:
        for sock in socks:
            sock.close()


async def test_a_silent_connection_is_closed(daemon: tuple[DaemonUnderTest, int]) -> None:
    """A client that connects and sends nothing is hung up on after the head deadline."""
    _, port = daemon
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        with anyio.fail_after(HEAD_TIMEOUT + 20):
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await stream.receive()


async def test_garbage_requests_do_not_flood_the_log(
        daemon: tuple[DaemonUnderTest, int]) -> None:
    """200 requests that are not HTTP: each refused, a few warnings logged, not 200."""
    running, port = daemon
    for _ in range(200):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"GARBAGE\x00\r\n\r\n")
            with anyio.fail_after(10):
                assert (await stream.receive()).startswith(b"HTTP/1.1 400")
    async with httpx.AsyncClient(timeout=10) as http:  # authenticated: unaffected
        reply = await http.get(f"http://127.0.0.1:{port}/metrics",
                               headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.status_code == 200
    warnings = [line for line in running.log_lines() if line.get("event") == "uvicorn.log"]
    assert 1 <= len(warnings) <= 20


async def test_healthz_turns_red_when_the_database_is_deleted_under_the_daemon(
        daemon: tuple[DaemonUnderTest, int]) -> None:
    """The store's probe sees the file gone: /healthz answers 503 and says so."""
    running, port = daemon
    assert await healthz(port) == 200
    running.db.unlink()
    async with httpx.AsyncClient(timeout=10) as http:

        async def red() -> httpx.Response | None:
            reply = await http.get(f"http://127.0.0.1:{port}/healthz")
            return reply if reply.status_code == 503 else None

        await wait_until(red, 15, "/healthz to notice", running)  # probes run once a second
        reply = await red()
    assert reply is not None
    assert reply.json()["checks"]["database"] == "failing"
    assert str(running.db) in reply.json()["error"]
