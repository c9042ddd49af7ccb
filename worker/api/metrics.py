"""``GET /metrics``: what callwatch is doing, in the Prometheus text format 0.0.4.

prometheus_client renders it, from a private ``CollectorRegistry`` (never the library's
global one, which would mix in whatever else imports it): its process collector
(``process_*``: memory, CPU, open files), and our collectors (``collectors.py``) reading the
parts' typed stats. The database's totals are read asynchronously first and handed to their
collector just before rendering; rendering itself never waits.
"""

from __future__ import annotations

import time

from prometheus_client import ProcessCollector, generate_latest
from prometheus_client.registry import CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response

from worker.api.collectors import DatabaseCollector, DatabaseSnapshot, LiveCollector
from worker.api.runtime import Context

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The registry of one API app and how to render it."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.registry = CollectorRegistry(auto_describe=False)
        self.database = DatabaseCollector()
        ProcessCollector(registry=self.registry)
        self.registry.register(LiveCollector(ctx))
        self.registry.register(self.database)

    async def render(self) -> bytes:
        store = self.ctx.runtime.store
        snapshot = DatabaseSnapshot(counts=await store.counts(),
                                    deliveries=await store.delivery_counts(),
                                    tables=await store.table_stats(),
                                    providers=tuple(sorted(self.ctx.runtime.config.providers)),
                                    wall_now=time.time())
        self.database.latest = snapshot  # no await between this and the rendering below
        return generate_latest(self.registry)


async def metrics(ctx: Context, request: Request, exporter: Metrics) -> Response:
    del ctx, request
    return Response(await exporter.render(), 200, media_type=CONTENT_TYPE)
