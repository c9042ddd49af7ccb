"""``callwatch deliveries show EVENT_ID``: every attempt to deliver one event.

Like Svix's attempt list: when, to which endpoint, what it answered, how fast, and the
first bytes of the reply. Nothing secret is shown: endpoints go through ``safe_url`` (no
query, no user info), and so does every URL found in an error or a reply; the text view
fits ``WIDTH`` columns (``--json`` has every value whole, redacted the same way).
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from worker.events import rfc3339
from worker.store.base import AttemptView, Store
from worker.terminal import WIDTH, printable, say, shorten, table
from worker.urls import safe_url

REPLY_SHOWN = 200  # bytes of each reply kept in the output (the log may hold more)
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+")


def redact(text: str) -> str:
    """``text`` with every URL in it shown as ``safe_url`` shows it (tokens in queries, user
    info in URLs never reach the terminal)."""
    return _URL.sub(lambda m: safe_url(m.group()), text)


def reply_text(reply: bytes, limit: int = REPLY_SHOWN) -> str:
    """The first ``limit`` bytes of a reply as redacted text (bad UTF-8 replaced)."""
    text = reply[:limit].decode("utf-8", errors="replace")
    return redact(text) + ("…" if len(reply) > limit else "")


def attempt_json(view: AttemptView) -> dict[str, Any]:
    a = view.attempt
    return {"endpoint": safe_url(view.endpoint), "state": view.state, "attempt": a.number,
            "at": rfc3339(a.started_at), "status": a.status,
            "duration_ms": round(a.latency * 1000, 1),
            "error": redact(a.error) if a.error else None, "reply": reply_text(a.reply)}


def attempt_rows(views: list[AttemptView]) -> list[list[str]]:
    """One table row per attempt: time, #, endpoint, answer, duration, the reply's start."""
    found = []
    for view in views:
        a = view.attempt
        answer = str(a.status) if a.status is not None else "-"
        said = redact(a.error) if a.error else reply_text(a.reply)
        found.append([(rfc3339(a.started_at) or "-")[:19].replace("T", " "), str(a.number),
                      safe_url(view.endpoint), answer, f"{a.latency * 1000:.0f}ms",
                      " ".join(said.split()) or "-"])
    return found


async def show_attempts(store: Store, event_id: str, as_json: bool) -> int:
    """Print the event's attempts; 1 (one line on stderr) if there is no such event."""
    views = await store.event_attempts(event_id)
    if views is None:
        print(f"callwatch: no event {event_id[:60]!r}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps({"event_id": event_id, "attempts": [attempt_json(v) for v in views]},
                         indent=2))
        return 0
    if not views:
        say(f"{event_id}: no attempt yet")
        return 0
    say(f"{event_id}: {len(views)} attempt{'s' if len(views) != 1 else ''}")
    say(table(attempt_rows(views), ["TIME (UTC)", "#", "ENDPOINT", "STATUS", "TOOK", "REPLY"],
              shrink=("ENDPOINT", "REPLY"), width=WIDTH))
    return 0


__all__ = ["attempt_json", "printable", "redact", "reply_text", "shorten", "show_attempts"]
