"""The relay's live counters, typed: what /metrics and ``status`` read.

Per endpoint as well as in total, so an operator sees which receiver is failing or slow.
Per-call ``--webhook`` URLs are counted together under one label (``per_call``): one series
per such URL would let anyone who can track a call grow the metrics without bound.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from worker.webhooks.endpoints import safe_url
from worker.webhooks.policy import Dead, Decision, Delivered, Disabled, Retry

OUTCOMES = ("delivered", "failed", "dead", "disabled")
PER_CALL = "per_call"


def outcome(decision: Decision) -> str:
    """The metrics' name for a decision: ``failed`` is an attempt that will be retried."""
    match decision:
        case Delivered():
            return "delivered"
        case Retry():
            return "failed"
        case Dead():
            return "dead"
        case Disabled():
            return "disabled"


@dataclass(kw_only=True)
class EndpointStats:
    """One endpoint's attempts by outcome and the seconds they took."""

    deliveries: Counter[str] = field(default_factory=lambda: Counter(dict.fromkeys(OUTCOMES, 0)))
    seconds: float = 0.0
    timed: int = 0  # attempts whose latency is in ``seconds`` (a dead-at-once one has none)


@dataclass(kw_only=True)
class RelayStats:
    """Attempts by outcome (every outcome present from the start), in total and per endpoint."""

    deliveries: Counter[str] = field(default_factory=lambda: Counter(dict.fromkeys(OUTCOMES, 0)))
    delivery_seconds: float = 0.0
    timed: int = 0
    endpoints: dict[str, EndpointStats] = field(default_factory=dict)

    def record(self, *, endpoint: str, per_call: bool, decision: Decision,
               latency: float | None) -> None:
        """Count one attempt (``latency`` None: nothing was sent)."""
        name = outcome(decision)
        label = PER_CALL if per_call else safe_url(endpoint)
        one = self.endpoints.get(label)
        if one is None:
            one = self.endpoints[label] = EndpointStats()
        self.deliveries[name] += 1
        one.deliveries[name] += 1
        if latency is not None:
            self.delivery_seconds += latency
            self.timed += 1
            one.seconds += latency
            one.timed += 1
