"""One tracked call as JSON: the shape ``status --json`` and the HTTP API share.

It lives here, below both the command line and the API, so that neither imports the other
(the API used to import ``cli.status`` for it; the layering contracts in pyproject.toml
forbid that now).
"""

from __future__ import annotations

from typing import Any

from worker.events import call_data, rfc3339
from worker.model import TrackedCall


def state_of(call: TrackedCall) -> str:
    """The one word a call's state is shown as: its terminal state, else ``set_aside``, else
    its status."""
    if call.terminal:
        return str(call.terminal)
    return "set_aside" if call.set_aside else str(call.status)


def call_json(call: TrackedCall) -> dict[str, Any]:
    """One call as ``status --json`` and the HTTP API show it."""
    data = call_data(call)
    data["state"] = state_of(call)
    data["tracked_at"] = rfc3339(call.tracked_at)
    data["next_poll_at"] = rfc3339(call.next_poll_at) if call.terminal is None else None
    data["consecutive_failures"] = call.consecutive_failures
    return data
