"""Shared helpers of the contract suite: a poll through the real reconciler, dead owners."""

from __future__ import annotations

import socket
import subprocess
import sys

from worker.config import TrackingConfig
from worker.model import CallStatus, RecordingSnapshot, RecordingStatus, Snapshot
from worker.reconcile import Policy, on_poll
from worker.store.base import NewCall, PollApplied, Store

T0 = 1_800_000_000.0
POLICY = Policy(tracking=TrackingConfig(), archiving=True)


def dead_owner() -> str:
    """The lease owner name of a process of this host that has exited."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return f"{socket.gethostname()}:{done.stdout.strip()}:dead"


async def poll(store: Store, call_id: str, snapshot: Snapshot, now: float,
               provider: str = "envoy") -> None:
    """Claim ``call_id`` and apply ``snapshot`` to it through the real reconciler."""
    claimed = [c for c in await store.claim_due_calls(provider, now, 100) if c.call_id == call_id]
    assert claimed, f"{call_id} was not due"
    decision = on_poll(claimed[0], snapshot, now, POLICY)
    await store.apply_poll_results([PollApplied(decision=decision, result=snapshot)], now)


def live() -> Snapshot:
    return Snapshot(status=CallStatus.LIVE, provider_status="in-progress", started_at=T0)


def ended_with_recording(recording_id: str = "r1") -> Snapshot:
    return Snapshot(status=CallStatus.ENDED, provider_status="ended", started_at=T0,
                    ended_at=T0 + 1,
                    recordings=(RecordingSnapshot(id=recording_id,
                                                  status=RecordingStatus.AVAILABLE,
                                                  url=f"https://s.example/{recording_id}",
                                                  url_expires_at=T0 + 3600, size=10),))


async def tracked(store: Store, *call_ids: str, provider: str = "envoy",
                  webhook_url: str | None = None) -> None:
    for call_id in call_ids:
        assert await store.track(NewCall(provider=provider, call_id=call_id,
                                          webhook_url=webhook_url), T0)
