"""The relay's pools: one per configured endpoint, one guarded pool for every per-call URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.webhooks.support import hook, make_config
from worker.http_aio import KINDS, AioTransport, Kind
from worker.http_pool import ShardedTransport
from worker.webhooks.endpoints import Endpoints
from worker.webhooks.guarded import GuardedTransport
from worker.webhooks.pools import Pools

pytestmark = pytest.mark.anyio
A, B = "https://a.example/hooks", "https://b.example/hooks"


@pytest.mark.parametrize("kind", KINDS)
async def test_each_configured_endpoint_has_its_own_pool_and_per_call_urls_share_one(
        tmp_path: Path, kind: Kind) -> None:
    """Two endpoints, two pools of the chosen transport; any other URL goes through the one
    guarded pool."""
    pools = Pools(Endpoints(make_config(tmp_path, [hook(A), hook(B)])), kind=kind)
    expected = AioTransport if kind == "aiohttp" else ShardedTransport
    try:
        a, b = pools.for_url(A), pools.for_url(B)
        assert isinstance(a, expected) and isinstance(b, expected)
        assert a is not b and pools.for_url(A) is a
        per_call = pools.for_url("https://x.example/1")
        assert isinstance(per_call, GuardedTransport)
        assert pools.for_url("https://y.example/2") is per_call
    finally:
        await pools.aclose()


async def test_a_reload_that_changes_a_limit_opens_a_pool_of_the_new_size(
        tmp_path: Path) -> None:
    """After SIGHUP, a changed max_in_flight or per-call budget gets a new pool; the
    policy of the per-call pool follows at once."""
    pools = Pools(Endpoints(make_config(tmp_path, [hook(A, max_in_flight=2)])))
    try:
        old, old_per_call = pools.for_url(A), pools.for_url("https://x.example/")
        pools.reconfigure(Endpoints(make_config(
            tmp_path, [hook(A, max_in_flight=4)],
            call_webhooks={"allow_private": False, "max_in_flight": 3})))
        new_per_call = pools.for_url("https://x.example/")
        assert pools.for_url(A) is not old
        assert new_per_call is not old_per_call
        assert isinstance(new_per_call, GuardedTransport)
        assert new_per_call.policy.allow_private is False
    finally:
        await pools.aclose()
