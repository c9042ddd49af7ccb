"""The relay's connections: one pool per configured endpoint, one guarded pool for the rest.

Why separate pools: in one shared pool a receiver that accepts connections and never answers
holds connections every other endpoint is waiting for. Here each configured endpoint has its
own pool, sized by its ``max_in_flight``, and every per-call URL shares one
``GuardedTransport`` sized by ``[call_webhooks] max_in_flight`` (which also refuses inside
addresses at connect time). With the per-group limits in ``slots`` this is what keeps one
endpoint's slowness from delaying another's deliveries.

Pool sizes are fixed when a pool is opened: a SIGHUP that changes a limit applies to the
slots at once and to the connections after a restart (a smaller limit is honoured at once
anyway, since the slots never send more).
"""

from __future__ import annotations

import httpx

from worker.http_pool import ShardedTransport
from worker.webhooks.endpoints import Endpoints
from worker.webhooks.guarded import GuardedTransport, Resolver, resolve


class Pools:
    """Connection pools by endpoint; ``aclose`` closes them all."""

    def __init__(self, endpoints: Endpoints, *, resolver: Resolver = resolve) -> None:
        self._endpoints = endpoints
        self._own: dict[str, ShardedTransport] = {}
        self._per_call = GuardedTransport(endpoints.policy,
                                          max_connections=endpoints.per_call_budget,
                                          resolver=resolver)

    def reconfigure(self, endpoints: Endpoints) -> None:
        """New endpoints get their pool when first used; the per-call policy applies now."""
        self._endpoints = endpoints
        self._per_call.policy = endpoints.policy

    def for_url(self, url: str) -> httpx.AsyncBaseTransport:
        """The pool that sends to ``url``."""
        if url not in self._endpoints.configured:
            return self._per_call
        pool = self._own.get(url)
        if pool is None:
            pool = self._own[url] = ShardedTransport(
                max_connections=self._endpoints.limit(url))
        return pool

    async def aclose(self) -> None:
        own, self._own = self._own, {}
        for pool in own.values():
            await pool.aclose()
        await self._per_call.aclose()
