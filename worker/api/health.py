"""``GET /healthz``: 200 only while the daemon is doing its job; 503 with every reason.

A probe that answers 200 from a daemon whose scheduler is wedged is worse than none, so the
answer is ``worker.health.judge``'s verdict: the same claim the systemd watchdog makes (see
that module for the rules). Reading the database is bounded in time: a probe must not hang.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from worker.api.runtime import Context
from worker.api.web import json_response
from worker.health import gather, judge


async def healthz(ctx: Context, request: Request) -> Response:
    del request
    runtime = ctx.runtime
    readings = await gather(runtime.store, runtime.components,
                            providers=list(runtime.config.providers),
                            uncommitted_since=runtime.scheduler.stats.uncommitted_since,
                            started_wall=runtime.started_wall, probes=ctx.probes)
    verdict = judge(readings)
    if not verdict.ok:
        return json_response(503, {"ok": False, "error": "; ".join(verdict.problems),
                                   "checks": verdict.checks})
    return json_response(200, {"ok": True, "checks": verdict.checks})
