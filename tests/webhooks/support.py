"""Helpers for the webhook tests: configs, events written straight into the outbox, verifying."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook

from worker.config import Config, parse
from worker.events import call_data, event_id
from worker.model import Event, EventType
from worker.reconcile import Decision
from worker.simulator import ReceivedRequest, Simulator
from worker.store.base import NewCall, PollApplied
from worker.store.sqlite import SQLiteStore

T0 = 1_800_000_000.0
SECRET = "whsec_" + base64.b64encode(b"callwatch-webhook-test-secret-1").decode()
SECRET_2 = "whsec_" + base64.b64encode(b"callwatch-webhook-test-secret-2").decode()
ENVIRON = {"ENVOY_KEY": "k", "HOOK_SECRET": SECRET, "BOTH_SECRETS": f"{SECRET} {SECRET_2}",
           "CALL_SECRET": SECRET_2}
CALL_TYPES = (EventType.CALL_STARTED, EventType.CALL_ENDED, EventType.CALL_COMPLETED)


def hook(url: str, **keys: Any) -> dict[str, Any]:
    """One ``[[webhooks]]`` table: fast retries by default, like the tests want."""
    return {"url": url, "secret_env": "HOOK_SECRET", "retry_schedule": [0.2, 0.5, 1],
            "timeout": 2, **keys}


def make_config(tmp_path: Path, hooks: Sequence[Mapping[str, Any]] = (),
                delivery: Mapping[str, Any] | None = None,
                call_webhooks: Mapping[str, Any] | None = None) -> Config:
    """A config; per-call URLs may reach loopback (the simulator) unless ``call_webhooks``
    says otherwise."""
    data: dict[str, Any] = {
        "worker": {"database": "callwatch.db"},
        "providers": {"envoy": {"api_key_env": "ENVOY_KEY"}},
        "webhooks": [dict(h) for h in hooks],
        "call_webhooks": dict(call_webhooks) if call_webhooks is not None
        else {"allow_private": True},
    }
    if delivery:
        data["delivery"] = dict(delivery)
    return parse(data, tmp_path / "callwatch.toml", ENVIRON)


async def emit(store: SQLiteStore, call_id: str, types: Sequence[EventType] = CALL_TYPES, *,
               webhook: str | None = None, provider: str = "envoy",
               now: float = T0) -> list[str]:
    """Write events for a call straight into the outbox (tracking it first); return their ids.

    Each event gets its own key, so the same type may be written again later."""
    await store.track(NewCall(provider=provider, call_id=call_id, webhook_url=webhook), now)
    call = await store.get_call(provider, call_id)
    assert call is not None
    known = len(await store.call_events(provider, call_id))
    events = tuple(Event(type=kind, key=f"{kind}#{known + i}", occurred_at=now,
                         data=call_data(call)) for i, kind in enumerate(types))
    await store.apply_poll_results([PollApplied(decision=Decision(call=call, events=events))],
                                   now)
    return [event_id(provider, call_id, e.key) for e in events]


def at(sim: Simulator, path: str) -> str:
    """The URL of one path of the simulator's receiver."""
    return f"{sim.sink_url}/{path}"


def to(requests: Sequence[ReceivedRequest], path: str) -> list[ReceivedRequest]:
    """The requests that came to ``at(sim, path)``."""
    return [r for r in requests if r.path == f"/hooks/{path}"]


def verify(request: ReceivedRequest, secret: str = SECRET) -> Any:
    """Verify a received webhook with the Standard Webhooks reference library."""
    headers = dict(request.headers)
    return Webhook(secret).verify(request.body, headers)
