"""``callwatch deliveries`` and ``callwatch replay``, plus the delivery parts of ``status``.

Like ``status``, these read and write the database directly, so they work whether or not the
daemon runs; a running daemon sends what ``replay`` queued within about a second.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime
from typing import Any

from worker.config import Config
from worker.events import rfc3339
from worker.store.base import Store, StoreNotFoundError
from worker.store.factory import open_configured
from worker.terminal import WIDTH, age, printable, shorten, table
from worker.urls import safe_url
from worker.webhooks.base import DeliveryCounts, DeliveryView, ListFilter

EVENT_ID = re.compile(r"msg_[a-z2-7]{32}")
_RELATIVE = re.compile(r"(?:(\d+(?:\.\d+)?)([smhd]))")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class BadInputError(ValueError):
    """A mistake in the command line: exit 2."""


def parse_since(text: str, now: float) -> float:
    """``--since``: RFC 3339 (``2026-11-20T12:00:00Z``) or an age like ``2h``, ``90m``,
    ``1h30m``, ``7d``; POSIX seconds."""
    text = text.strip()
    if text and _RELATIVE.sub("", text) == "":
        return now - sum(float(n) * _UNIT[unit] for n, unit in _RELATIVE.findall(text))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadInputError(f"--since {text[:40]!r}: give a time like 2026-11-20T12:00:00Z or an "
                       f"age like 2h, 30m, 7d") from None
    if moment.tzinfo is None:
        raise BadInputError(f"--since {text[:40]!r}: add a time zone, like Z or +01:00")
    return moment.timestamp()


async def run_command(config: Config, args: argparse.Namespace) -> int:
    """Entry point of ``deliveries`` and ``replay`` (validated by the caller's parser)."""
    if args.limit is not None and args.limit < 1:
        raise BadInputError("--limit must be 1 or more")
    if args.command == "replay":
        _check_replay(args)
    try:
        store = await open_configured(config, create=False)
    except StoreNotFoundError as exc:
        print(f"{exc}: nothing was delivered", file=sys.stderr)
        return 0 if args.command == "deliveries" else 1
    try:
        if args.command == "deliveries":
            return await _deliveries(store, args)
        return await _replay(store, args)
    finally:
        await store.close()


def _check_replay(args: argparse.Namespace) -> None:
    if (args.event_id is None) == (not args.dead):
        raise BadInputError("replay takes either an EVENT_ID or --dead")
    if args.since is not None and not args.dead:
        raise BadInputError("--since goes with --dead")
    if args.event_id is not None and not EVENT_ID.fullmatch(args.event_id):
        raise BadInputError(f"malformed event id {args.event_id[:60]!r}: ids look like msg_ and "
                       f"32 letters and digits (see `callwatch deliveries`)")
    args.since_ts = parse_since(args.since, time.time()) if args.since is not None else None


async def _deliveries(store: Store, args: argparse.Namespace) -> int:
    only = ListFilter.DEAD if args.dead else ListFilter.FAILED if args.failed else None
    found = await store.list_deliveries(only=only, endpoint=args.endpoint, limit=args.limit)
    if args.json:
        print(json.dumps([delivery_json(d) for d in found], indent=2))
        return 0
    if not found:
        print("no deliveries" + (f" ({only})" if only else ""))
        return 0
    print("\n".join(delivery_lines(found, time.time(), with_call=True)))
    return 0


async def _replay(store: Store, args: argparse.Namespace) -> int:
    done = await store.replay(time.time(), event_id=args.event_id, dead=args.dead,
                              since=args.since_ts, endpoint=args.endpoint)
    if not done.found:
        print(f"callwatch: no event {args.event_id} in the outbox", file=sys.stderr)
        return 1
    for url in done.enabled:
        print(f"re-enabled endpoint {safe_url(url)}: what waited for it is queued again too")
    if done.requeued == 0:
        what = "every delivery of that event is still pending" if args.event_id else \
            "there are no dead deliveries" + (" since then" if args.since else "")
        print(f"nothing to replay: {what}")
        return 0
    print(f"re-queued {done.requeued} deliver{'y' if done.requeued == 1 else 'ies'} (the same "
          f"webhook-id, a new timestamp); a running daemon sends them within about a second")
    return 0


# --------------------------------------------------------------------------- shared views


DELIVERY_HEADERS = ["EVENT ID", "EVENT", "STATE", "TRIES", "LAST", "NEXT"]


def delivery_lines(views: list[DeliveryView], now: float, *, with_call: bool,
                   width: int = WIDTH) -> list[str]:
    """Deliveries grouped under ``CALL -> ENDPOINT`` headings, newest group first.

    One row per delivery would need about 180 columns (two ids, a URL, an error); under a
    heading each row keeps the event id whole (``replay`` takes it) in 100 columns.
    """
    groups: dict[tuple[str, str], list[DeliveryView]] = {}
    for view in views:
        key = (f"{view.provider} {view.call_id}" if with_call else "", view.endpoint)
        groups.setdefault(key, []).append(view)
    lines: list[str] = []
    for (call, endpoint), members in groups.items():
        shown = safe_url(endpoint)
        lines.append(shorten(printable(f"{call} -> {shown}" if call else shown), width))
        rows = [[v.event_id, v.event_type, str(v.state), str(v.attempts), _last(v),
                 _next(v, now)] for v in members]
        lines += ["  " + line for line in table(rows, DELIVERY_HEADERS, shrink=("LAST", "NEXT"),
                                                width=width - 2).splitlines()]
    return lines


def delivery_json(view: DeliveryView) -> dict[str, Any]:
    return {
        "event_id": view.event_id, "type": view.event_type, "provider": view.provider,
        "call_id": view.call_id, "endpoint": safe_url(view.endpoint), "state": str(view.state),
        "attempts": view.attempts, "last_status": view.last_status,
        "last_error": view.last_error, "in_flight": view.in_flight,
        "next_attempt_at": None if view.in_flight else rfc3339(view.next_attempt_at),
        "created_at": rfc3339(view.created_at), "finished_at": rfc3339(view.finished_at),
    }


def counts_lines(counts: DeliveryCounts, now: float) -> list[str]:
    """The overview's delivery summary, and one warning per disabled endpoint."""
    lines = [f"deliveries: {counts.pending} pending ({counts.retrying} retrying), "
             f"{counts.dead} dead, {counts.disabled} waiting for a disabled endpoint"]
    for endpoint in counts.disabled_endpoints:
        lines.append(f"warning: endpoint {safe_url(endpoint.url)} is disabled since "
                     f"{age(now - endpoint.since)} ago ({endpoint.reason}); "
                     f"`callwatch replay --dead --endpoint URL` re-enables it")
    return lines


def counts_json(counts: DeliveryCounts) -> dict[str, Any]:
    return {
        "pending": counts.pending, "retrying": counts.retrying, "dead": counts.dead,
        "disabled": counts.disabled,
        "disabled_endpoints": [
            {"url": safe_url(e.url), "since": rfc3339(e.since), "reason": e.reason}
            for e in counts.disabled_endpoints],
    }


def _last(view: DeliveryView) -> str:
    return view.last_error or (str(view.last_status) if view.last_status is not None else "-")


def _next(view: DeliveryView, now: float) -> str:
    if view.in_flight:
        return "in flight"
    if view.next_attempt_at is None:
        return "behind earlier" if view.state == "pending" else "-"
    if view.next_attempt_at <= now:
        return "due now"
    return f"in {age(view.next_attempt_at - now)}"
