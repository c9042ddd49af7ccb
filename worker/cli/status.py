"""``callwatch status``: what is tracked, how far each call got, what was emitted.

Reads the database directly (never the daemon), so it works whether or not the daemon runs.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import Any

from worker.call_view import call_json, state_of
from worker.config import Config
from worker.events import rfc3339
from worker.heartbeat import DaemonState, judge, overall
from worker.model import TrackedCall
from worker.store.base import Store, StoreNotFoundError
from worker.store.factory import open_configured
from worker.terminal import WIDTH, age, printable, say, shorten, table
from worker.urls import safe_url

__all__ = ["age", "call_json", "show_status", "table"]  # age, table: shared with deliveries


def recordings_summary(call: TrackedCall) -> str:
    if not call.recordings:
        return "-"
    counts: dict[str, int] = {}
    for rec in call.recordings:
        counts[str(rec.status)] = counts.get(str(rec.status), 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


def next_poll(call: TrackedCall, now: float) -> str:
    """The NEXT POLL cell: ``in 12s``, ``due now``, ``overdue 2m`` (late), ``-`` (settled).

    A poll a few seconds late is normal (a running daemon claims due calls about every
    second); beyond ``OVERDUE_AFTER`` it means the daemon is down, stuck or overloaded.
    """
    if call.terminal is not None or call.untracked_at is not None:
        return "-"
    if call.next_poll_at > now:
        return f"in {age(call.next_poll_at - now)}"
    if now - call.next_poll_at < OVERDUE_AFTER:
        return "due now"
    return f"overdue {age(now - call.next_poll_at)}"


OVERDUE_AFTER = 5.0
SCAN_WHEN_FILTERED = 10_000  # newest calls read when --state/--provider filter them


def matches(call: TrackedCall, state: str | None, provider: str | None) -> bool:
    """Whether ``call`` passes ``status --state`` and ``--provider``."""
    return ((state is None or state_of(call) == state)
            and (provider is None or call.provider == provider))


async def show_status(config: Config, provider: str | None, call_id: str | None,
                      as_json: bool, limit: int, *, state: str | None = None,
                      only_provider: str | None = None) -> int:
    """Print the overview or one call's detail; exit code 0, or 1 for an unknown call."""
    try:
        store = await open_configured(config, create=False)
    except StoreNotFoundError as exc:
        print(f"{exc}: nothing is tracked", file=sys.stderr)
        return 0 if provider is None else 1
    try:
        if provider is not None and call_id is not None:
            return await _one(store, provider, call_id, as_json)
        return await _overview(store, as_json, limit, state, only_provider)
    finally:
        await store.close()


async def _overview(store: Store, as_json: bool, limit: int, state: str | None,
                    only_provider: str | None) -> int:
    from worker.cli.archive_report import overview_lines, state_json
    from worker.cli.deliveries import counts_json, counts_lines

    counts = await store.counts()
    deliveries = await store.delivery_counts()
    archive = await store.archive_state()
    calls = await _calls(store, limit, state, only_provider)
    now = time.time()
    daemons = judge(await store.heartbeats(), now, socket.gethostname())
    if as_json:
        print(json.dumps({
            "daemon": {"state": overall(daemons), "workers": [daemon_json(d, now)
                                                              for d in daemons]},
            "calls_by_state": [{"provider": p, "state": s, "calls": n}
                               for (p, s), n in sorted(counts.calls_by_state.items())],
            "events": counts.events,
            "deliveries": counts_json(deliveries),
            "archive": state_json(archive),
            "recent": [call_json(c) for c in calls],
        }, indent=2))
        return 0
    totals: dict[str, int] = {}
    for (_, kind), n in counts.calls_by_state.items():
        totals[kind] = totals.get(kind, 0) + n
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(totals.items())) or "none"
    for line in daemon_lines(daemons, now):
        say(line)
    say(f"calls: {summary}; active: {counts.active}; events written: {counts.events}")
    say("\n".join(counts_lines(deliveries, now)))
    for line in overview_lines(archive, now):
        say(line)
    if counts.oldest_due_at is not None and counts.oldest_due_at < now - OVERDUE_AFTER:
        why = ("the daemon is behind" if overall(daemons) == "running"
               else "no daemon is running on this database")
        say(f"warning: the oldest due poll is {age(now - counts.oldest_due_at)} overdue ({why})")
    rows = [[c.provider, c.call_id, state_of(c), age(now - c.tracked_at),
             recordings_summary(c), next_poll(c, now)] for c in calls]
    if rows:
        say()
        say(table(rows, ["PROVIDER", "CALL", "STATE", "AGE", "RECORDINGS", "NEXT POLL"],
                  shrink=("RECORDINGS",)))
    elif state or only_provider:
        say("\nno call matches " + " and ".join(
            f"--{name} {value}" for name, value in (("state", state),
                                                   ("provider", only_provider)) if value))
    return 0


async def _calls(store: Store, limit: int, state: str | None,
                 only_provider: str | None) -> list[TrackedCall]:
    """The newest ``limit`` calls, filtered by ``--state`` and ``--provider``.

    The store lists the newest calls; with a filter, up to ``SCAN_WHEN_FILTERED`` of them are
    read and filtered here (a settled state is rarely among the very newest).
    """
    if state is None and only_provider is None:
        return await store.list_calls(limit=limit, include_terminal=True)
    settled = state in (None, "completed", "tracking_failed")
    found = await store.list_calls(limit=max(limit, SCAN_WHEN_FILTERED),
                                   include_terminal=settled)
    return [c for c in found if matches(c, state, only_provider)][:limit]


async def _one(store: Store, provider: str, call_id: str, as_json: bool) -> int:
    from worker.call_view import downloads_json
    from worker.cli.archive_report import recording_lines
    from worker.cli.deliveries import delivery_json, delivery_lines

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
    say(f"{call.provider} {call.call_id}: {state_of(call)}"
        + (f" ({call.terminal_reason})" if call.terminal_reason else ""))
    fields = [
        ("provider status", call.provider_status or "-"),
        ("tracked", f"{rfc3339(call.tracked_at)} ({age(now - call.tracked_at)} ago)"),
        ("started", rfc3339(call.started_at) or "-"),
        ("ended", rfc3339(call.ended_at) or "-"),
        ("end reason", call.end_reason or "-"),
        ("last poll", rfc3339(call.last_polled_at) or "never"),
        ("next poll", f"{rfc3339(call.next_poll_at)} ({next_poll(call, now)})"
         if call.terminal is None and call.untracked_at is None else "none (done)"),
        *([("untracked", rfc3339(call.untracked_at) or "-")] if call.untracked_at else []),
        ("poll failures", str(call.consecutive_failures)),
        *([("set aside", call.set_aside)] if call.set_aside else []),
        ("metadata", json.dumps(dict(call.metadata)) if call.metadata else "-"),
        ("webhook", safe_url(call.webhook_url) if call.webhook_url else "-"),
    ]
    for name, value in fields:  # cut to 100 columns: --json has every value whole
        say(f"  {name:<16}{shorten(printable(value), WIDTH - 18)}")
    say("\nrecordings:" if call.recordings else "\nrecordings: none")
    for line in recording_lines(call, downloads, now):
        say(line)
    say(f"\nevents ({len(events)}):")
    for event in events:
        say(f"  {rfc3339(event.occurred_at)}  {event.type:<26} {event.id}")
    say(f"\nwebhook deliveries ({len(deliveries)}):")
    for line in delivery_lines(deliveries, now, with_call=False, width=98):
        say("  " + line)
    return 0


def daemon_lines(daemons: list[DaemonState], now: float) -> list[str]:
    """``daemon: running (pid 4242 on host, up 3h12m, version 1.2.0, beat 2s ago)``, one line
    per worker row, then its last error; ``daemon: stopped`` when there is none."""
    if not daemons:
        return ["daemon: stopped (no worker has a heartbeat on this database)"]
    lines = []
    for d in daemons:
        h = d.heartbeat
        lines.append(shorten(
            f"daemon: {d.state} (pid {h.pid} on {h.host}, up {age(h.beat_at - h.started_at)}, "
            f"version {h.version}, last heartbeat {age(now - h.beat_at)} ago"
            + (f"; {d.why}" if d.why else "") + ")", WIDTH))
        if h.last_error is not None and h.last_error_at is not None:
            lines.append(shorten(f"  last error {age(now - h.last_error_at)} ago: "
                                 f"{h.last_error}", WIDTH))
    return lines


def daemon_json(d: DaemonState, now: float) -> dict[str, Any]:
    h = d.heartbeat
    return {"state": d.state, "why": d.why, "host": h.host, "pid": h.pid,
            "version": h.version, "started_at": rfc3339(h.started_at),
            "uptime_seconds": round(h.beat_at - h.started_at, 1),
            "last_heartbeat_at": rfc3339(h.beat_at),
            "last_heartbeat_age_seconds": round(now - h.beat_at, 1),
            "last_progress_at": rfc3339(h.progress_at),
            "last_error": h.last_error, "last_error_at": rfc3339(h.last_error_at)}
