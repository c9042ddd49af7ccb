"""ShardedTransport: many small connection pools behind one httpx client, over real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import httpx
import pytest
from anyio.abc import SocketAttribute, SocketStream

from worker.http_pool import ShardedTransport

pytestmark = pytest.mark.anyio

REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Server:
    """A keep-alive HTTP/1.1 server on loopback; ``/slow`` waits until ``release`` is set."""

    url: str = ""
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    release: anyio.Event = field(default_factory=anyio.Event)

    async def handle(self, stream: SocketStream) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            async with stream:
                buffer = b""
                while True:
                    while b"\r\n\r\n" not in buffer:
                        buffer += await stream.receive()
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    if b" /slow " in head.split(b"\r\n")[0]:
                        await self.release.wait()
                    await stream.send(REPLY)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            self.open_now -= 1


def _port(listener: anyio.abc.Listener[SocketStream]) -> int:
    port: int = listener.extra(SocketAttribute.local_port)  # noqa: S610 - anyio, not Django
    return port


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    found = Server()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    found.url = f"http://127.0.0.1:{_port(listener)}"
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, found.handle)
        yield found
        tg.cancel_scope.cancel()


async def test_concurrent_requests_spread_over_small_pools(server: Server) -> None:
    """Ten requests at once open pools of two, at most max_connections/2 pools per origin."""
    transport = ShardedTransport(max_connections=8, per_shard=2)
    async with httpx.AsyncClient(transport=transport) as client:
        results: list[int] = []

        async def get() -> None:
            results.append((await client.get(server.url + "/slow")).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(get)
            await anyio.sleep(0.3)
            assert transport.shard_count() == 4
            server.release.set()
        assert results == [200] * 10
        assert server.most_open <= 8


async def test_a_request_holds_its_slot_until_the_response_is_closed(server: Server) -> None:
    """Sequential requests share one pool; an open streamed response makes the next one wait
    for a pool of its own."""
    transport = ShardedTransport(max_connections=8, per_shard=1)
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(5):
            assert (await client.get(server.url + "/")).status_code == 200
        assert transport.shard_count() == 1
        assert server.connections == 1  # one keep-alive connection served all five
        async with client.stream("GET", server.url + "/") as open_reply:
            assert (await client.get(server.url + "/")).status_code == 200
            await open_reply.aread()
        assert transport.shard_count() == 2


async def test_a_failed_request_gives_its_slot_back() -> None:
    """After a refused connection the same pool is used again, not a new one."""
    with anyio.fail_after(10):
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = _port(listener)
        await listener.aclose()  # nothing listens there now
    transport = ShardedTransport(max_connections=8, per_shard=1)
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(3):
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{port}/")
        assert transport.shard_count() == 1


async def test_pools_of_an_origin_unused_for_a_while_are_closed(server: Server) -> None:
    """An origin not asked for in idle_close seconds loses its pools at the next request."""
    now = [1000.0]
    transport = ShardedTransport(max_connections=8, per_shard=2, idle_close=60,
                                 clock=lambda: now[0])
    other = server.url.replace("127.0.0.1", "localhost")
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(server.url + "/")
        now[0] += 61
        await client.get(other + "/")
        assert transport.shard_count() == 1


async def test_a_cap_below_one_pool_of_connections_is_still_the_cap(server: Server) -> None:
    """max_connections=1 with pools of two: one connection, the second request waits."""
    transport = ShardedTransport(max_connections=1, per_shard=2)
    async with httpx.AsyncClient(transport=transport) as client, anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(client.get, server.url + "/slow")
        await anyio.sleep(0.3)
        assert server.open_now == 1
        server.release.set()
    assert server.most_open == 1
