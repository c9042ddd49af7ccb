"""``GET /healthz``: 200 only while the loops go round and the database answers.

A probe that answers 200 from a daemon whose scheduler is wedged is worse than none, so the
check is the same claim the systemd watchdog makes: every long-running part that reports
progress (``progress()``, else ``stats.last_progress``, both monotonic) did so recently. The
database must answer a trivial query within a couple of seconds; a probe must not hang.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from worker.api.asgi import Reply, Request, json_reply
from worker.api.runtime import Context

PROGRESS_LIMIT = 30.0  # seconds without progress before a loop counts as stuck
DATABASE_TIMEOUT = 2.0
LOOPS = ("scheduler", "relay", "archiver")


def progress_of(component: Any) -> float | None:
    """When ``component`` last made progress (monotonic), None if it does not say."""
    progress = getattr(component, "progress", None)
    if callable(progress):
        return float(progress())
    last = getattr(getattr(component, "stats", None), "last_progress", None)
    return float(last) if isinstance(last, int | float) else None


async def _database(ctx: Context) -> str | None:
    """None when the database answers, else why not."""
    with anyio.move_on_after(DATABASE_TIMEOUT):
        try:
            await ctx.runtime.store.schema_version()
        except Exception as exc:
            return f"the database does not answer: {type(exc).__name__}: {str(exc)[:200]}"
        return None
    return f"the database did not answer within {DATABASE_TIMEOUT:.0f} s"


async def healthz(ctx: Context, request: Request) -> Reply:
    del request
    now = time.monotonic()
    problems: list[str] = []
    checks: dict[str, Any] = {}
    for name in LOOPS:
        last = progress_of(getattr(ctx.runtime, name, None))
        if last is None:
            continue
        age = max(0.0, now - last)
        checks[name] = {"progress_age": round(age, 3)}
        if age > PROGRESS_LIMIT:
            problems.append(f"the {name} made no progress for {age:.0f} s")
    database = await _database(ctx)
    checks["database"] = "ok" if database is None else "failing"
    if database is not None:
        problems.append(database)
    if problems:
        return json_reply(503, {"ok": False, "error": "; ".join(problems), "checks": checks})
    return json_reply(200, {"ok": True, "checks": checks})
