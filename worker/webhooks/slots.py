"""Claimed deliveries waiting for a sender, per endpoint, and the attempts under way.

Why a queue at all: the relay claims from the database ahead of need, so that when an
attempt ends the next one starts at once instead of after a commit and a claim (which
would leave about a third of the slots idle at loopback speeds, ``bench/relay.py``). Each
endpoint may have ``limit(url)`` attempts in flight and as many again claimed and waiting;
the senders take from the endpoints in turn, so a slow endpoint's queue never holds up
another's. Waiting deliveries are leased like in-flight ones: if the process dies they are
sent after the restart; at a clean stop their leases are handed back.

Per-call URLs (``shared(url)``) have their per-URL limit too, and all of them together also
share one budget (``shared_limit()``): thousands of calls, each with its own slow URL, fill
that budget and no more, so the configured endpoints' slots stay theirs.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable

import anyio

from worker.webhooks.base import ClaimedDelivery

AHEAD = 2  # claimed (in flight + waiting) per endpoint: this many times its limit


class Slots:
    """Per-endpoint queues and in-flight counts, shared by the relay's loop and senders."""

    def __init__(self, limit: Callable[[str], int], *, on_low: Callable[[], None],
                 shared: Callable[[str], bool] = lambda _url: False,
                 shared_limit: Callable[[], int] = lambda: 0) -> None:
        self._limit = limit
        self._on_low = on_low  # the loop should claim more
        self._shared = shared
        self._shared_limit = shared_limit
        self._queues: dict[str, deque[ClaimedDelivery]] = {}
        self.in_flight: Counter[str] = Counter()
        self.shared_in_flight = 0
        self._queued_shared: set[int] = set()  # pks waiting for a per-call URL
        self._taken_shared: set[int] = set()  # pks counted in shared_in_flight
        self._changed = anyio.Event()
        self._closed = False

    def outstanding(self, url: str) -> int:
        """Claimed for ``url`` and not finished: waiting or in flight."""
        queue = self._queues.get(url)
        return self.in_flight[url] + (len(queue) if queue else 0)

    def room(self, urls: Iterable[str]) -> dict[str, int]:
        """How many more each of ``urls`` (and every endpoint with claimed work) may claim."""
        return {url: AHEAD * self._limit(url) - self.outstanding(url)
                for url in {*urls, *self.busy()}}

    def busy(self) -> set[str]:
        """Every endpoint with claimed work (waiting or in flight)."""
        return set(self._queues) | {url for url, n in self.in_flight.items() if n}

    @property
    def shared_room(self) -> int:
        """How many more deliveries to per-call URLs, all together, may be claimed."""
        return AHEAD * self._shared_limit() - self.shared_in_flight - len(self._queued_shared)

    @property
    def total(self) -> int:
        return sum(self.in_flight.values()) + sum(len(q) for q in self._queues.values())

    def put(self, items: Iterable[ClaimedDelivery]) -> None:
        for item in items:
            self._queues.setdefault(item.endpoint, deque()).append(item)
            if self._shared(item.endpoint):
                self._queued_shared.add(item.pk)
        self._notify()

    async def take(self) -> ClaimedDelivery | None:
        """The next delivery whose endpoint has a free slot (counted in flight from now);
        None once closed."""
        while not self._closed:
            if (item := self._pick()) is not None:
                return item
            await self._changed.wait()
        return None

    def done(self, item: ClaimedDelivery) -> None:
        """An attempt ended: its slot is free for the next one."""
        self.in_flight[item.endpoint] -= 1
        if self.in_flight[item.endpoint] <= 0:
            del self.in_flight[item.endpoint]
        if item.pk in self._taken_shared:
            self._taken_shared.discard(item.pk)
            self.shared_in_flight -= 1
        self._notify()

    def close(self) -> None:
        """Senders take nothing more (attempts under way finish)."""
        self._closed = True
        self._notify()

    def _pick(self) -> ClaimedDelivery | None:
        shared_full = self.shared_in_flight >= self._shared_limit()
        for url, queue in self._queues.items():
            shared = self._shared(url)
            if shared and shared_full:
                continue
            if self.in_flight[url] < self._limit(url):
                item = queue.popleft()
                self.in_flight[url] += 1
                if item.pk in self._queued_shared:
                    self._queued_shared.discard(item.pk)
                    self.shared_in_flight += 1
                    self._taken_shared.add(item.pk)
                del self._queues[url]
                if queue:
                    self._queues[url] = queue  # to the back: endpoints take turns
                if len(queue) * 2 < self._limit(url):
                    self._on_low()
                return item
        return None

    def _notify(self) -> None:
        """Wake every waiting sender (each looks again); later waiters get a fresh event."""
        self._changed.set()
        self._changed = anyio.Event()
