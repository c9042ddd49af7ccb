"""``callwatch status``: what is tracked, how far each call got, what was emitted.

Reads the database directly (never the daemon), so it works whether or not the daemon runs.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from worker.config import Config
from worker.events import call_data, rfc3339
from worker.model import TrackedCall
from worker.store.base import Store, StoreNotFoundError
from worker.store.factory import open_configured


def age(seconds: float) -> str:
    """A short human duration: ``42s``, ``7m``, ``3h12m``, ``2d4h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


def state_of(call: TrackedCall) -> str:
    if call.terminal:
        return str(call.terminal)
    return "set_aside" if call.set_aside else str(call.status)


def recordings_summary(call: TrackedCall) -> str:
    if not call.recordings:
        return "-"
    counts: dict[str, int] = {}
    for rec in call.recordings:
        counts[str(rec.status)] = counts.get(str(rec.status), 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


async def show_status(config: Config, provider: str | None, call_id: str | None,
                      as_json: bool, limit: int) -> int:
    """Print the overview or one call's detail; exit code 0, or 1 for an unknown call."""
    try:
        store = await open_configured(config, create=False)
    except StoreNotFoundError as exc:
        print(f"{exc}: nothing is tracked", file=sys.stderr)
        return 0 if provider is None else 1
    try:
        if provider is not None and call_id is not None:
            return await _one(store, provider, call_id, as_json)
        return await _overview(store, as_json, limit)
    finally:
        await store.close()


async def _overview(store: Store, as_json: bool, limit: int) -> int:
    from worker.archive.report import overview_lines, state_json
    from worker.webhooks.commands import counts_json, counts_lines

    counts = await store.counts()
    deliveries = await store.delivery_counts()
    archive = await store.archive_state()
    calls = await store.list_calls(limit=limit, include_terminal=True)
    now = time.time()
    if as_json:
        print(json.dumps({
            "calls_by_state": [{"provider": p, "state": s, "calls": n}
                               for (p, s), n in sorted(counts.calls_by_state.items())],
            "events": counts.events,
            "deliveries": counts_json(deliveries),
            "archive": state_json(archive),
            "recent": [call_json(c) for c in calls],
        }, indent=2))
        return 0
    totals: dict[str, int] = {}
    for (_, state), n in counts.calls_by_state.items():
        totals[state] = totals.get(state, 0) + n
    summary = ", ".join(f"{n} {state}" for state, n in sorted(totals.items())) or "none"
    print(f"calls: {summary}; active: {counts.active}; events written: {counts.events}")
    print("\n".join(counts_lines(deliveries, now)))
    for line in overview_lines(archive, now):
        print(line)
    if counts.oldest_due_at is not None and counts.oldest_due_at < now - 5:
        print(f"warning: the oldest due poll is {age(now - counts.oldest_due_at)} late "
              f"(is the daemon running?)")
    rows = [[c.provider, c.call_id, state_of(c), age(now - c.tracked_at),
             recordings_summary(c),
             age(c.next_poll_at - now) if c.terminal is None and c.next_poll_at > now else "-"]
            for c in calls]
    if rows:
        print()
        print(table(rows, ["PROVIDER", "CALL", "STATE", "AGE", "RECORDINGS", "NEXT POLL"]))
    return 0


async def _one(store: Store, provider: str, call_id: str, as_json: bool) -> int:
    from worker.archive.report import downloads_json, recording_lines
    from worker.webhooks.commands import delivery_json, delivery_rows

    call = await store.get_call(provider, call_id)
    if call is None:
        print(f"callwatch: {provider} {call_id[:80]!r} is not tracked", file=sys.stderr)
        return 1
    events = await store.call_events(provider, call_id)
    deliveries = await store.list_deliveries(call=(provider, call_id), limit=10_000)
    downloads = await store.download_info(provider, call_id)
    if as_json:
        data = call_json(call)
        data["events"] = [{"id": e.id, "type": e.type, "at": rfc3339(e.occurred_at)}
                          for e in events]
        data["deliveries"] = [delivery_json(d) for d in deliveries]
        data["downloads"] = downloads_json(call, downloads)
        print(json.dumps(data, indent=2))
        return 0
    now = time.time()
    print(f"{call.provider} {call.call_id}: {state_of(call)}"
          + (f" ({call.terminal_reason})" if call.terminal_reason else ""))
    fields = [
        ("provider status", call.provider_status or "-"),
        ("tracked", f"{rfc3339(call.tracked_at)} ({age(now - call.tracked_at)} ago)"),
        ("started", rfc3339(call.started_at) or "-"),
        ("ended", rfc3339(call.ended_at) or "-"),
        ("end reason", call.end_reason or "-"),
        ("last poll", rfc3339(call.last_polled_at) or "never"),
        ("next poll", rfc3339(call.next_poll_at) if call.terminal is None else "none (done)"),
        ("poll failures", str(call.consecutive_failures)),
        *([("set aside", call.set_aside)] if call.set_aside else []),
        ("metadata", json.dumps(dict(call.metadata)) if call.metadata else "-"),
        ("webhook", call.webhook_url or "-"),
    ]
    for name, value in fields:
        print(f"  {name:<16}{value}")
    print("\nrecordings:" if call.recordings else "\nrecordings: none")
    for line in recording_lines(call, downloads, now):
        print(line)
    print(f"\nevents ({len(events)}):")
    for event in events:
        print(f"  {rfc3339(event.occurred_at)}  {event.type:<26} {event.id}")
    print(f"\nwebhook deliveries ({len(deliveries)}):")
    if deliveries:
        print(table(delivery_rows(deliveries, now, with_call=False),
                    ["EVENT", "ENDPOINT", "STATE", "ATTEMPTS", "LAST", "NEXT ATTEMPT",
                     "EVENT ID"]))
    return 0


def call_json(call: TrackedCall) -> dict[str, Any]:
    """One call as ``status --json`` and the HTTP API show it."""
    data = call_data(call)
    data["state"] = state_of(call)
    data["tracked_at"] = rfc3339(call.tracked_at)
    data["next_poll_at"] = rfc3339(call.next_poll_at) if call.terminal is None else None
    data["consecutive_failures"] = call.consecutive_failures
    return data
