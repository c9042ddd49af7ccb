"""A budget for log lines that strangers can cause: a few per minute, then a count.

Refused requests (a bad signature, bytes that are not HTTP) cost an attacker nothing; one
warning each would let them fill the journal. ``allow()`` says whether to log this one;
the next line that is allowed carries how many were suppressed in between, so nothing is
hidden, only summarised.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(kw_only=True)
class LogBudget:
    """At most ``burst`` lines per ``period`` seconds."""

    burst: int = 10
    period: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _window_start: float = field(default=float("-inf"), init=False)
    _used: int = field(default=0, init=False)
    _suppressed: int = field(default=0, init=False)

    def allow(self) -> bool:
        """True if this line may be logged; else it is counted as suppressed."""
        now = self.clock()
        if now - self._window_start >= self.period:
            self._window_start, self._used = now, 0
        if self._used < self.burst:
            self._used += 1
            return True
        self._suppressed += 1
        return False

    def take_suppressed(self) -> int:
        """How many lines were suppressed since the last call (then 0 again)."""
        taken, self._suppressed = self._suppressed, 0
        return taken
