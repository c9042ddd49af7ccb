"""The API server component: sockets it binds, routing errors, crashes, keep-alive latency."""

from __future__ import annotations

import socket
import stat
import time
from pathlib import Path

import anyio
import httpx
import pytest
import structlog

from tests.api.support import AUTH, UV_ID, TestRuntime, serving
from worker.api.server import ApiServer, ListenError, bind

pytestmark = pytest.mark.anyio




def short_dir() -> Path:
    """A short directory for unix sockets (their paths must stay under ~100 bytes)."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix="cw-"))


async def test_unix_socket_serves_with_mode_0660_and_is_removed_after(
        runtime: TestRuntime) -> None:
    """A path in `listen` serves over a 0660 unix socket that is gone after stop."""
    path = short_dir() / "api.sock"
    async with serving(runtime, str(path)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        transport = httpx.AsyncHTTPTransport(uds=str(path))
        async with httpx.AsyncClient(transport=transport, base_url="http://callwatch") as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/metrics", headers=AUTH)).status_code == 200
    assert not path.exists()


async def test_a_stale_unix_socket_file_is_replaced(runtime: TestRuntime) -> None:
    """A socket file left by a dead process (nobody listening) does not block the start."""
    path = short_dir() / "api.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    assert path.exists()
    async with serving(runtime, str(path)):
        transport = httpx.AsyncHTTPTransport(uds=str(path))
        async with httpx.AsyncClient(transport=transport, base_url="http://callwatch") as http:
            assert (await http.get("/healthz")).status_code == 200


def test_a_live_unix_socket_or_a_regular_file_is_never_removed() -> None:
    """Another listener's socket, or a file that is not a socket, is left alone."""
    folder = short_dir()
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(folder / "live.sock"))
    live.listen()
    (folder / "file.sock").write_text("not a socket")
    try:
        with pytest.raises(ListenError, match="another process is listening"):
            bind(str(folder / "live.sock"))
        with pytest.raises(ListenError, match="not a socket"):
            bind(str(folder / "file.sock"))
    finally:
        live.close()
    assert (folder / "file.sock").read_text() == "not a socket"


def test_a_port_in_use_is_a_clear_error() -> None:
    """Binding a busy port fails before the daemon says it is ready, naming the address."""
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(ListenError, match=f"127.0.0.1:{port}"):
            bind(f"127.0.0.1:{port}")
    finally:
        taken.close()


def test_tcp_socket_is_created_with_ipproto_tcp() -> None:
    """IPPROTO_TCP, so asyncio turns Nagle off (keep-alive replies would stall 40 ms)."""
    sock = bind("127.0.0.1:0")
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


async def test_keep_alive_requests_do_not_stall(client: httpx.AsyncClient) -> None:
    """Thirty requests on one connection take well under the 1.2 s Nagle would cost."""
    await client.get("/healthz")
    started = time.perf_counter()
    for _ in range(30):
        assert (await client.get(f"/v1/calls/ultravox/{UV_ID}")).status_code == 404
    assert time.perf_counter() - started < 0.6


async def test_unknown_route_is_404_and_wrong_method_is_405_json(
        client: httpx.AsyncClient) -> None:
    """Routing errors are JSON too; 405 says which methods are allowed."""
    missing = await client.get("/v2/nothing")
    assert missing.status_code == 404 and missing.json() == {"error": "not found"}
    wrong = await client.delete("/v1/calls")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert "DELETE" in wrong.json()["error"]


async def test_invalid_utf8_in_the_path_is_400(client: httpx.AsyncClient) -> None:
    """A percent-encoded byte sequence that is not UTF-8 is bad input, not a crash."""
    reply = await client.get("/v1/calls/ultravox/%ff%fe")
    assert reply.status_code == 400


async def test_a_crashing_handler_answers_500_without_a_traceback(
        client: httpx.AsyncClient, runtime: TestRuntime) -> None:
    """An unexpected exception is logged as api.error and answered 500 internal error."""

    async def broken(provider: str, call_id: str) -> None:
        raise RuntimeError("secret internals /var/lib/callwatch")

    runtime.store.get_call = broken  # type: ignore[method-assign]
    with structlog.testing.capture_logs() as logs:
        reply = await client.get(f"/v1/calls/ultravox/{UV_ID}")
    assert reply.status_code == 500
    assert reply.json() == {"error": "internal error"}
    assert "secret internals" not in reply.text
    assert any(entry["event"] == "api.error" for entry in logs)


async def test_request_logs_never_hold_the_token_or_the_body(
        client: httpx.AsyncClient) -> None:
    """api.request says method, route, status and time; no header and no body."""
    with structlog.testing.capture_logs() as logs:
        await client.post("/v1/calls", json={"provider": "ultravox", "call_id": UV_ID,
                                             "metadata": {"pii": "do-not-log"}})
    text = repr(logs)
    assert "api.request" in text
    assert AUTH["Authorization"].split()[1] not in text
    assert "do-not-log" not in text


async def test_stop_ends_run_promptly(runtime: TestRuntime) -> None:
    """stop() makes run() return within a second."""
    started = time.monotonic()
    async with serving(runtime, "127.0.0.1:0") as api, httpx.AsyncClient(
            base_url=api.url) as http:
        assert (await http.get("/healthz")).status_code == 200
    assert time.monotonic() - started < 2.0


async def test_garbage_on_the_wire_is_a_400_and_a_structured_log_line(
        server: ApiServer) -> None:
    """uvicorn's own complaint reaches the daemon's structured log, not stderr as plain text."""
    assert isinstance(server.address, tuple)
    with structlog.testing.capture_logs() as logs:
        async with await anyio.connect_tcp(server.address[0], server.address[1]) as stream:
            await stream.send(b"GARBAGE\x00\r\n\r\n")
            with anyio.fail_after(5):
                reply = await stream.receive()
    assert reply.startswith(b"HTTP/1.1 400")
    assert any(entry["event"] == "uvicorn.log" for entry in logs)


async def test_a_body_that_trickles_in_too_slowly_is_408(server: ApiServer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that announces a body and never sends it does not hold a task forever."""
    monkeypatch.setattr("worker.api.middleware.BODY_TIMEOUT", 0.3)
    assert isinstance(server.address, tuple)
    async with await anyio.connect_tcp(server.address[0], server.address[1]) as stream:
        await stream.send(b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                          + AUTH["Authorization"].split()[1].encode()
                          + b"\r\nContent-Length: 100\r\n\r\n{\"prov")
        with anyio.fail_after(5):
            reply = await stream.receive()
    assert reply.startswith(b"HTTP/1.1 408")
    assert b"not received within 0.3 s" in reply


async def test_too_many_headers_are_431(anonymous: httpx.AsyncClient) -> None:
    """101 small headers fit the size cap but not the count cap: 431, before auth."""
    headers = {f"x-h{i}": "1" for i in range(101)}
    reply = await anonymous.get("/healthz", headers=headers)
    assert reply.status_code == 431
    assert "more than 100 request headers" in reply.json()["error"]
