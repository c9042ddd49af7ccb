"""PURE: what to do after one delivery attempt (delivered, retry at T, dead, endpoint disabled).

Like ``reconcile``, nothing here sleeps, reads a clock or touches the network: the attempt's
outcome, the time and a random number come in, a decision comes out, so the rules can be
tested exhaustively:

* a 2xx is delivered; everything else (3xx included: redirects are not followed) failed;
* 410 Gone disables the endpoint (a consumer telling us to stop, not a hiccup);
* a failed attempt is retried after the next step of the endpoint's ``retry_schedule``,
  +-10 % jitter so that deliveries failing together do not retry together;
* 429 and 503 may say ``Retry-After``: no retry happens before it (capped at an hour, so a
  confused endpoint cannot park a delivery, and the call's later events, for days);
* when the schedule has no step left the delivery is dead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

JITTER = 0.1
MAX_RETRY_AFTER = 3600.0
THROTTLED = frozenset({429, 503})
GONE = 410


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """What one attempt got: a status code, or an error when no status arrived in time."""

    status: int | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds, from the Retry-After header

    def describe(self) -> str:
        if self.status is None:
            return self.error or "no answer"
        if 300 <= self.status < 400:
            return f"HTTP {self.status} (redirects are not followed)"
        return f"HTTP {self.status}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Delivered:
    """A 2xx: done."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Retry:
    """Try again at ``at`` (POSIX seconds)."""

    at: float
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Dead:
    """Give up; ``callwatch replay`` can queue it again."""

    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Disabled:
    """The endpoint answered 410 Gone: stop sending it anything until a replay."""

    reason: str


Decision = Delivered | Retry | Dead | Disabled


def decide(*, attempt: int, outcome: Outcome, schedule: Sequence[float], now: float,
           rng: float) -> Decision:
    """The decision after attempt number ``attempt`` (1 = the first since it was queued).

    ``schedule[i]`` is the wait before retry ``i + 1``, so a delivery gets
    ``len(schedule) + 1`` attempts; ``rng`` in [0, 1) picks the jitter.
    """
    if outcome.status is not None and 200 <= outcome.status < 300:
        return Delivered()
    reason = outcome.describe()
    if outcome.status == GONE:
        return Disabled(reason=f"{reason} Gone: the endpoint asked us to stop")
    if attempt > len(schedule):
        tries = f"{attempt} attempt{'s' if attempt != 1 else ''}"
        return Dead(reason=f"{reason}; gave up after {tries}")
    delay = schedule[attempt - 1] * (1 + JITTER * (2 * rng - 1))
    if outcome.status in THROTTLED and outcome.retry_after is not None:
        delay = max(delay, min(outcome.retry_after, MAX_RETRY_AFTER))
    return Retry(at=now + delay, reason=reason)
