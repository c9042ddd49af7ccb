"""How many requests for one path a provider serves at the same moment.

The multi-worker tests check that no call is polled by two workers at once: a provider API's
path names one call (``/api/calls/{id}``, ``/v1/calls/{id}/recording``...), so the most
requests ever in flight for one path is the most concurrent polls of one call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
App = Callable[[Scope, Any, Any], Awaitable[None]]


class Concurrency:
    """In-flight and peak request counts per (role, path), fed by ``wrap``ped apps."""

    def __init__(self) -> None:
        self.in_flight: Counter[tuple[str, str]] = Counter()
        self.peak: Counter[tuple[str, str]] = Counter()

    def wrap(self, role: str, app: App) -> App:
        """``app``, counting its HTTP requests per path while they run."""

        async def counted(scope: Scope, receive: Any, send: Any) -> None:
            if scope.get("type") != "http":
                await app(scope, receive, send)
                return
            key = (role, str(scope.get("path", "")))
            self.in_flight[key] += 1
            self.peak[key] = max(self.peak[key], self.in_flight[key])
            try:
                await app(scope, receive, send)
            finally:
                self.in_flight[key] -= 1

        return counted

    def most_at_once(self) -> int:
        """The most requests one path ever had in flight together (0 before any request)."""
        return max(self.peak.values(), default=0)
