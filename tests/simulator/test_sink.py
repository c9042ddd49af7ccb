"""The webhook sink: records every request and misbehaves on demand."""

from __future__ import annotations

import anyio
import httpx
import pytest

from worker.simulator import Simulator


@pytest.mark.anyio
async def test_records_path_headers_body_and_time(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    """Every request is kept with its path, headers, raw body, arrival time and our status."""
    body = b'{"type": "call.ended"}'
    reply = await client.post(sim.sink_url + "/a", content=body, headers={"webhook-id": "msg_1"})
    assert reply.status_code == 200
    (received,) = sim.sink.requests
    assert (received.method, received.path, received.body, received.status) == (
        "POST", "/hooks/a", body, 200,
    )  # fmt: skip
    assert received.header("Webhook-Id") == "msg_1"
    assert received.json() == {"type": "call.ended"}
    assert received.received_at > 0


@pytest.mark.anyio
async def test_fails_the_first_n_attempts(sim: Simulator, client: httpx.AsyncClient) -> None:
    """fail_next=2 answers 500 twice, then 200; every attempt is recorded."""
    sim.sink.behave(fail_next=2)
    statuses = [(await client.post(sim.sink_url, content=b"{}")).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert [r.status for r in sim.sink.requests] == [500, 500, 200]


@pytest.mark.anyio
async def test_per_path_gone_and_throttled(sim: Simulator, client: httpx.AsyncClient) -> None:
    """One path can answer 410 and another 429 + Retry-After while the rest answer 200."""
    sim.sink.behave("/hooks/gone", status=410)
    sim.sink.behave("/hooks/busy", status=429, retry_after=7)
    assert (await client.post(sim.sink_url + "/gone", content=b"{}")).status_code == 410
    busy = await client.post(sim.sink_url + "/busy", content=b"{}")
    assert (busy.status_code, busy.headers["retry-after"]) == (429, "7")
    assert (await client.post(sim.sink_url + "/fine", content=b"{}")).status_code == 200


@pytest.mark.anyio
async def test_slow_answers_time_out_but_are_recorded(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    """A delay longer than the client's timeout makes it time out; the request still counts."""
    sim.sink.behave(delay=2)
    with pytest.raises(httpx.ReadTimeout):
        await client.post(sim.sink_url, content=b"{}", timeout=0.2)
    assert len(sim.sink.requests) == 1


@pytest.mark.anyio
async def test_huge_reply_announces_its_size(sim: Simulator, client: httpx.AsyncClient) -> None:
    """huge_reply streams that many bytes; a client may stop reading early."""
    sim.sink.behave(huge_reply=50 * 2**20)
    async with client.stream("POST", sim.sink_url, content=b"{}") as reply:
        assert reply.headers["content-length"] == str(50 * 2**20)
        async for _ in reply.aiter_raw():
            break


@pytest.mark.anyio
async def test_down_refuses_connections_until_up_on_the_same_url(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    """sink_down makes connections fail; sink_up listens again at the same URL."""
    url = sim.sink_url
    await sim.sink_down()
    with pytest.raises(httpx.ConnectError):
        await client.post(url, content=b"{}")
    await sim.sink_up()
    assert sim.sink_url == url
    assert (await client.post(url, content=b"{}")).status_code == 200


@pytest.mark.anyio
async def test_wait_for_returns_when_the_condition_holds_or_times_out(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    """wait_for wakes on the request that makes the predicate true, else raises TimeoutError."""

    async def post_later() -> None:
        await anyio.sleep(0.05)
        await client.post(sim.sink_url, content=b"{}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(post_later)
        requests = await sim.sink.wait_for(lambda reqs: len(reqs) == 1, timeout=5)
    assert len(requests) == 1
    with pytest.raises(TimeoutError, match="received"):
        await sim.sink.wait_for(lambda reqs: len(reqs) == 2, timeout=0.1)


@pytest.mark.anyio
async def test_redirect_sends_a_location(sim: Simulator, client: httpx.AsyncClient) -> None:
    """status=307 with location answers a redirect that names where to go."""
    sim.sink.behave("/hooks/moved", status=307, location="/hooks/elsewhere")
    reply = await client.post(sim.sink_url + "/moved", content=b"{}")
    assert (reply.status_code, reply.headers["location"]) == (307, "/hooks/elsewhere")
    assert [r.path for r in sim.sink.requests] == ["/hooks/moved"]


@pytest.mark.anyio
async def test_stall_answers_the_status_then_never_finishes(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    """stall=True sends the status line and one byte of a promised 1 MiB body, then nothing."""
    sim.sink.behave(stall=True)
    async with client.stream("POST", sim.sink_url, content=b"{}") as reply:
        assert reply.status_code == 200
        chunks = reply.aiter_raw()
        assert await chunks.__anext__() == b"{"
        with pytest.raises(TimeoutError), anyio.fail_after(0.3):
            await chunks.__anext__()


@pytest.mark.anyio
async def test_a_body_cut_short_is_recorded_as_not_received(sim: Simulator) -> None:
    """A sender killed mid-body (Content-Length not reached) is logged as 499, never a 2xx."""
    host, port = sim.sink_url.removeprefix("http://").split("/")[0].split(":")
    stream = await anyio.connect_tcp(host, int(port))
    await stream.send(b"POST /hooks HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                      b"Content-Type: application/json\r\n\r\n{\"half\":")
    await anyio.sleep(0.1)
    await stream.aclose()
    await sim.sink.wait_for(lambda requests: len(requests) >= 1, timeout=5)
    assert sim.sink.requests[0].status == 499
