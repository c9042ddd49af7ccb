"""The per-call pool: resolve once, check, connect to the checked address, over real loopback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from worker.config_sections import CallWebhooksConfig
from worker.http_aio import KINDS, Kind
from worker.simulator import Simulator, World, run_simulator
from worker.webhooks import transport
from worker.webhooks.guarded import GuardedTransport

pytestmark = pytest.mark.anyio


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> Kind:
    """Every guard test runs over each transport: the guard sits at a different seam in each."""
    found: Kind = request.param
    return found


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(World()) as running:
        yield running


class Resolver:
    """A DNS stand-in: every name resolves to ``answer``; counts the lookups."""

    def __init__(self, *answer: str) -> None:
        self.answer = list(answer)
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        return self.answer


async def send(pool: GuardedTransport, url: str) -> transport.Reply:
    return await transport.post(pool, url, body=b"{}", headers={}, time_limit=3,
                                now=time.time())


def port_of(sim: Simulator) -> int:
    return urlsplit(sim.sink_url).port or 80


async def test_a_name_resolving_to_loopback_is_refused_and_nothing_connects(
        sim: Simulator, kind: Kind) -> None:
    """A public-looking name whose DNS answer is loopback fails the attempt; no request."""
    resolver = Resolver("127.0.0.1")
    async with GuardedTransport(CallWebhooksConfig(), max_connections=4,
                                resolver=resolver, kind=kind) as pool:
        reply = await send(pool, f"http://hooks.example.com:{port_of(sim)}/hooks/x")
    assert reply.outcome.status is None
    assert "refused" in (reply.outcome.error or "") and "loopback" in (reply.outcome.error or "")
    assert resolver.lookups == ["hooks.example.com"]
    assert sim.sink.requests == []


async def test_one_inside_address_among_public_ones_refuses_the_host(
        sim: Simulator, kind: Kind) -> None:
    """A DNS answer mixing public and inside addresses is refused whole (no connection tried
    to any of them)."""
    resolver = Resolver("93.184.216.34", "127.0.0.1")
    async with GuardedTransport(CallWebhooksConfig(), max_connections=4,
                                resolver=resolver, kind=kind) as pool:
        reply = await send(pool, f"http://hooks.example.com:{port_of(sim)}/hooks/x")
    assert "refused" in (reply.outcome.error or "")
    assert sim.sink.requests == []


async def test_it_connects_to_the_checked_address_and_keeps_the_host_name(
        sim: Simulator, kind: Kind) -> None:
    """The name is never resolved by anyone else: a name no real DNS knows reaches the
    address our resolver gave (here allowed), with the name in the Host header; each new
    connection resolves again."""
    resolver = Resolver("127.0.0.1")
    policy = CallWebhooksConfig(allow_private=True)
    async with GuardedTransport(policy, max_connections=4, resolver=resolver,
                                kind=kind) as pool:
        reply = await send(pool, f"http://rebind.invalid:{port_of(sim)}/hooks/x")
    assert reply.outcome.status == 200
    (request,) = sim.sink.requests
    assert request.header("host") == f"rebind.invalid:{port_of(sim)}"
    assert resolver.lookups == ["rebind.invalid"]


async def test_allow_hosts_is_checked_at_every_attempt_before_any_lookup(
        sim: Simulator, kind: Kind) -> None:
    """A host no longer on allow_hosts (changed by a reload) is refused without a lookup."""
    resolver = Resolver("127.0.0.1")
    policy = CallWebhooksConfig(allow_private=True, allow_hosts=("*.example.org",))
    async with GuardedTransport(policy, max_connections=4, resolver=resolver,
                                kind=kind) as pool:
        reply = await send(pool, f"http://other.example.net:{port_of(sim)}/hooks/x")
    assert "allow_hosts" in (reply.outcome.error or "")
    assert resolver.lookups == []
    assert sim.sink.requests == []


@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "0x7f.1", "[::ffff:127.0.0.1]"])
async def test_an_inside_address_literal_is_refused_without_a_lookup_or_a_connection(
        sim: Simulator, kind: Kind, host: str) -> None:
    """aiohttp never hands an address literal to its resolver: the URL check refuses it
    first, however it is spelled, over either transport."""
    resolver = Resolver("93.184.216.34")
    async with GuardedTransport(CallWebhooksConfig(), max_connections=4, resolver=resolver,
                                kind=kind) as pool:
        reply = await send(pool, f"http://{host}:{port_of(sim)}/hooks/x")
    assert reply.outcome.status is None
    assert "refused" in (reply.outcome.error or "")
    assert resolver.lookups == []
    assert sim.sink.requests == []
