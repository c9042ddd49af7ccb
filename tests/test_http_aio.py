"""The daemon's HTTP client over each transport (``worker.http_aio``), against real loopback
servers: every behaviour the callers rely on, pinned for httpx's transport and aiohttp's."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.abc import SocketAttribute, SocketStream
from structlog.testing import capture_logs

from tests.webhooks.support import make_config
from worker.daemon import http_client
from worker.http_aio import KINDS, AioTransport, Kind, kind_from
from worker.webhooks import transport

pytestmark = pytest.mark.anyio



def _reply(status: str, body: bytes = b"ok", extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


@dataclass
class Server:
    """A keep-alive HTTP/1.1 server on loopback; the request line's path picks the answer."""

    url: str = ""
    port: int = 0
    heads: list[bytes] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    closed_early: int = 0  # connections the client dropped while we were still sending
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
                    self.heads.append(head)
                    if not await self.answer(stream, head):
                        return
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            self.open_now -= 1

    async def answer(self, stream: SocketStream, head: bytes) -> bool:
        path = head.split(b"\r\n")[0].split(b" ")[1].decode()
        if path.startswith("/slow"):
            await self.release.wait()
        if path.startswith("/redirect"):
            await stream.send(_reply("302 Found", extra=f"Location: {self.url}/elsewhere\r\n"))
        elif path.startswith("/cookie"):
            await stream.send(_reply("200 OK", extra="Set-Cookie: session=secret; Path=/\r\n"))
        elif path.startswith("/stall"):
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
            await anyio.sleep(30)
        elif path.startswith("/cut"):
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            return False
        elif path.startswith("/huge"):  # 64 MiB: a reader must stop early, not drain it
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n")
            try:
                for _ in range(1024):
                    await stream.send(b"x" * 65536)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self.closed_early += 1
                return False
        elif path.startswith("/range"):
            ranged = next((line for line in head.split(b"\r\n")
                           if line.lower().startswith(b"range:")), None)
            body = b"0123456789"
            if ranged is None:
                await stream.send(_reply("200 OK", body))
            else:
                start = int(ranged.split(b"=")[1].split(b"-")[0])
                await stream.send(_reply("206 Partial Content", body[start:],
                                         extra=f"Content-Range: bytes {start}-9/10\r\n"))
        else:
            await stream.send(_reply("200 OK"))
        return True


def _port(listener: anyio.abc.Listener[SocketStream]) -> int:
    port: int = listener.extra(SocketAttribute.local_port)  # noqa: S610 - anyio, not Django
    return port


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    found = Server()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    found.port = _port(listener)
    found.url = f"http://127.0.0.1:{found.port}"
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, found.handle)
        yield found
        found.release.set()
        tg.cancel_scope.cancel()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> Kind:
    found: Kind = request.param
    return found


def client(tmp_path: Path, kind: Kind) -> httpx.AsyncClient:
    """The daemon's client (one provider of 32 slots: 96 connections per origin)."""
    return http_client(make_config(tmp_path), kind)


async def test_a_redirect_is_the_answer_not_followed(server: Server, kind: Kind,
                                                     tmp_path: Path) -> None:
    async with client(tmp_path, kind) as http:
        reply = await http.get(server.url + "/redirect")
    assert reply.status_code == 302
    assert len(server.heads) == 1


async def test_a_stalled_body_is_a_read_timeout(server: Server, kind: Kind,
                                                tmp_path: Path) -> None:
    async with client(tmp_path, kind) as http:
        with anyio.fail_after(10), pytest.raises(httpx.ReadTimeout):
            await http.get(server.url + "/stall", timeout=httpx.Timeout(5.0, read=0.3))


async def test_waiting_for_a_connection_past_the_pool_timeout_is_a_timeout(
        server: Server, kind: Kind) -> None:
    """Two connections per origin, held by slow requests: the next one times out waiting."""
    pool = transport.connection_pool(2, kind)
    async with httpx.AsyncClient(transport=pool) as http, anyio.create_task_group() as tg:
        tg.start_soon(http.get, server.url + "/slow")
        tg.start_soon(http.get, server.url + "/slow")
        await anyio.sleep(0.2)
        with anyio.fail_after(10), pytest.raises(httpx.TimeoutException):
            await http.get(server.url + "/", timeout=httpx.Timeout(5.0, pool=0.3))
        server.release.set()
    assert server.most_open == 2


async def test_a_refused_connection_is_a_connect_error(kind: Kind, tmp_path: Path) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = _port(listener)
    await listener.aclose()  # nothing listens there now
    async with client(tmp_path, kind) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/")


async def test_a_body_cut_short_is_a_transport_error(server: Server, kind: Kind,
                                                     tmp_path: Path) -> None:
    async with client(tmp_path, kind) as http:
        with pytest.raises(httpx.TransportError):
            await http.get(server.url + "/cut")


async def test_a_capped_read_drops_the_connection_instead_of_draining_it(
        server: Server, kind: Kind, tmp_path: Path) -> None:
    """Reading 256 KiB of a 64 MiB body and closing: the server sees the connection go, and
    the next request opens a new one."""
    async with client(tmp_path, kind) as http:
        with anyio.fail_after(10):
            async with http.stream("GET", server.url + "/huge") as reply:
                kept = 0
                async for chunk in reply.aiter_raw():
                    kept += len(chunk)
                    if kept >= 262_144:
                        break
            assert (await http.get(server.url + "/")).status_code == 200
            while server.closed_early == 0:  # noqa: ASYNC110 - the server's own counter
                await anyio.sleep(0.01)
    assert server.connections == 2


async def test_a_range_request_resumes(server: Server, kind: Kind, tmp_path: Path) -> None:
    async with client(tmp_path, kind) as http:
        reply = await http.get(server.url + "/range", headers={"Range": "bytes=4-"})
    assert reply.status_code == 206
    assert reply.content == b"456789"
    assert reply.headers["content-range"] == "bytes 4-9/10"


async def test_connections_per_origin_are_capped_and_origins_do_not_share_the_cap(
        server: Server, kind: Kind) -> None:
    """Ten slow requests to one origin with a cap of four: at most four connections; a
    request to another origin (the same server under another name) is not kept waiting."""
    pool = transport.connection_pool(4, kind)
    async with httpx.AsyncClient(transport=pool) as http, anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(http.get, server.url + "/slow")
        await anyio.sleep(0.3)
        assert server.open_now == 4
        other = server.url.replace("127.0.0.1", "localhost")
        with anyio.fail_after(5):
            assert (await http.get(other + "/")).status_code == 200
        server.release.set()
    assert server.most_open == 5


async def test_the_relay_sends_no_cookie_back(server: Server, kind: Kind) -> None:
    """The relay's pool (no client layers) keeps no cookie jar: a receiver's Set-Cookie is
    never sent back (aiohttp's session would keep one: ours has a dummy jar)."""
    async with transport.connection_pool(4, kind) as pool:
        for path in ("/cookie", "/again"):
            reply = await transport.post(pool, server.url + path, body=b"{}", headers={},
                                         time_limit=5, now=time.time())
            assert reply.outcome.status == 200
    assert b"cookie:" not in server.heads[1].lower()


async def test_the_url_goes_out_as_encoded(server: Server, kind: Kind, tmp_path: Path) -> None:
    """A signed URL's escapes arrive byte for byte."""
    async with client(tmp_path, kind) as http:
        await http.get(server.url + "/sig?X-Signature=a%2Fb%7Ec%3D%3D+x&path=%2F%41")
    assert server.heads[0].startswith(b"GET /sig?X-Signature=a%2Fb%7Ec%3D%3D+x&path=%2F%41 ")


async def test_environment_proxies_are_used_and_no_proxy_is_honoured(
        server: Server, kind: Kind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY sends requests to the proxy (absolute URL in the request line); a host on
    NO_PROXY goes direct."""
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.setenv("NO_PROXY", "localhost")
    async with client(tmp_path, kind) as http:
        await http.get("http://provider.invalid/calls/1")
        await http.get(server.url.replace("127.0.0.1", "localhost") + "/direct")
    proxied, direct = (head.split(b"\r\n")[0] for head in server.heads)
    assert proxied == b"GET http://provider.invalid/calls/1 HTTP/1.1"
    assert direct == b"GET /direct HTTP/1.1"


def test_the_transport_is_chosen_by_the_environment() -> None:
    assert kind_from({"CALLWATCH_HTTP_TRANSPORT": "httpx"}) == "httpx"
    assert kind_from({"CALLWATCH_HTTP_TRANSPORT": " AIOHTTP "}) == "aiohttp"
    with capture_logs() as logs:
        assert kind_from({"CALLWATCH_HTTP_TRANSPORT": "curl"}) == kind_from({})
    assert [(e["event"], e["value"]) for e in logs] == [("http.transport_unknown", "curl")]
    assert isinstance(transport.connection_pool(2, "aiohttp"), AioTransport)
