"""The relay's connections: one pool per configured endpoint, one guarded pool for the rest.

Why separate pools: in one shared pool a receiver that accepts connections and never answers
holds connections every other endpoint is waiting for. Here each configured endpoint has its
own pool, sized by its ``max_in_flight``, and every per-call URL shares one
``GuardedTransport`` sized by ``[call_webhooks] max_in_flight`` (which also refuses inside
addresses at connect time). With the per-group limits in ``slots`` this is what keeps one
endpoint's slowness from delaying another's deliveries.

A SIGHUP that changes a limit opens a new pool of the new size for the next attempts; the
old one is closed at the end (attempts under way on it finish there).
"""

from __future__ import annotations

import httpx

from worker.http_aio import DEFAULT, AioTransport, Kind
from worker.http_pool import ShardedTransport
from worker.webhooks.endpoints import Endpoints
from worker.webhooks.guarded import GuardedTransport, Resolver, resolve


class Pools:
    """Connection pools by endpoint; ``aclose`` closes them all."""

    def __init__(self, endpoints: Endpoints, *, resolver: Resolver = resolve,
                 kind: Kind = DEFAULT) -> None:
        self._endpoints = endpoints
        self._resolver = resolver
        self.kind = kind  # the transport (worker.http_aio) of every pool made here
        self._own: dict[str, tuple[int, httpx.AsyncBaseTransport]] = {}
        self._budget = endpoints.per_call_budget
        self._per_call = GuardedTransport(endpoints.policy, max_connections=self._budget,
                                          resolver=resolver, kind=kind)
        self._retired: list[httpx.AsyncBaseTransport] = []

    def reconfigure(self, endpoints: Endpoints) -> None:
        """New endpoints get their pool when first used; the per-call policy applies now,
        and a new per-call budget gets a pool of its size."""
        self._endpoints = endpoints
        self._per_call.policy = endpoints.policy
        if endpoints.per_call_budget != self._budget:
            self._retired.append(self._per_call)
            self._budget = endpoints.per_call_budget
            self._per_call = GuardedTransport(endpoints.policy, max_connections=self._budget,
                                              resolver=self._resolver, kind=self.kind)

    def for_url(self, url: str) -> httpx.AsyncBaseTransport:
        """The pool that sends to ``url``."""
        if url not in self._endpoints.configured:
            return self._per_call
        size = self._endpoints.limit(url)
        found = self._own.get(url)
        if found is None or found[0] != size:
            if found is not None:
                self._retired.append(found[1])
            found = self._own[url] = (size, self._pool(size))
        return found[1]

    def _pool(self, size: int) -> httpx.AsyncBaseTransport:
        if self.kind == "aiohttp":
            return AioTransport(max_connections=size)
        return ShardedTransport(max_connections=size)

    async def aclose(self) -> None:
        pools = [pool for _, pool in self._own.values()] + self._retired + [self._per_call]
        self._own, self._retired = {}, []
        for pool in pools:
            await pool.aclose()
