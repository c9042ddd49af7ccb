"""Is the daemon doing its job? One pure decision for ``/healthz`` and the systemd watchdog.

Both make the same claim, so both call ``judge`` on the same typed readings. The daemon is
unhealthy (503, and no watchdog ping) when:

* a loop made no progress for ``progress`` seconds (the scheduler's progress ages while its
  writer holds results it cannot commit, so a writer stuck on a full disk or on one bad row
  counts here too);
* the writer has had results it could not commit for ``uncommitted`` seconds;
* the most overdue poll is ``overdue`` seconds late, counted from when this process started
  at the earliest (a daemon that was stopped for a day must get time to catch up, not be
  restarted by its watchdog over and over);
* the database does not answer, refuses writes, or was deleted or replaced under us (the
  store's own ``probe()``).

``gather`` reads the live parts; ``judge`` decides and is tested exhaustively (hypothesis).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import anyio

from worker.component import AnyComponent
from worker.store.base import StoreHealth

DATABASE_TIMEOUT = 2.0


class HealthSource(Protocol):
    """What health reads from the store: its own probe (the file deleted or replaced under
    us, refusing writes, writes failing) and the next due poll (an index read)."""

    async def probe(self) -> StoreHealth: ...

    async def next_due_at(self, provider: str) -> float | None: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """Seconds past which each reading counts as a failure."""

    progress: float = 30.0
    uncommitted: float = 60.0
    overdue: float = 600.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Readings:
    """What health is decided on; times are seconds, monotonic unless named ``wall``."""

    now: float  # monotonic
    progress: Mapping[str, float]  # component name -> when it last made progress
    uncommitted_since: float | None = None  # the scheduler's writer holds uncommitted results
    wall_now: float = 0.0
    started_wall: float = 0.0  # when this process started (wall clock)
    oldest_due_wall: float | None = None  # when the most overdue poll fell due (wall clock)
    store_problem: str | None = None  # None: the database answers and takes writes


@dataclass(frozen=True, kw_only=True, slots=True)
class Verdict:
    """``ok`` and, when not, every reason (one line each); ``checks`` for the JSON answer."""

    ok: bool
    problems: tuple[str, ...]
    checks: Mapping[str, Any]


def overdue_for(readings: Readings) -> float:
    """How late the most overdue poll is, counted from this process's start at the earliest."""
    if readings.oldest_due_wall is None:
        return 0.0
    return max(0.0, readings.wall_now - max(readings.oldest_due_wall, readings.started_wall))


def judge(readings: Readings, limits: Limits = Limits()) -> Verdict:
    """The verdict on ``readings`` under ``limits``: pure, no clock, no I/O."""
    problems: list[str] = []
    checks: dict[str, Any] = {}
    for name, last in sorted(readings.progress.items()):
        age = max(0.0, readings.now - last)
        checks[name] = {"progress_age": round(age, 3)}
        if age > limits.progress:
            problems.append(f"the {name} made no progress for {age:.0f} s")
    if readings.uncommitted_since is not None:
        held = max(0.0, readings.now - readings.uncommitted_since)
        checks["writer"] = {"uncommitted_for": round(held, 3)}
        if held > limits.uncommitted:
            problems.append(f"poll results could not be committed for {held:.0f} s")
    overdue = overdue_for(readings)
    checks["polls"] = {"overdue": round(overdue, 3)}
    if overdue > limits.overdue:
        problems.append(f"the most overdue poll is {overdue:.0f} s late")
    checks["database"] = "ok" if readings.store_problem is None else "failing"
    if readings.store_problem is not None:
        problems.append(readings.store_problem)
    return Verdict(ok=not problems, problems=tuple(problems), checks=checks)


async def store_reading(store: HealthSource, providers: Iterable[str], *,
                        probe: bool = True) -> tuple[float | None, str | None]:
    """``(when the most overdue poll fell due, wall clock; problem)``, bounded in time.

    ``probe`` runs the store's own probe, which takes the write lock for a moment: the
    watchdog loop asks for it every few seconds, not at every ping.
    """
    with anyio.move_on_after(DATABASE_TIMEOUT):
        try:
            if probe and (health := await store.probe()).problem is not None:
                return None, health.problem
            due = [when for p in providers if (when := await store.next_due_at(p)) is not None]
        except Exception as exc:
            return None, f"the database does not answer: {type(exc).__name__}: {str(exc)[:200]}"
        return min(due, default=None), None
    return None, f"the database did not answer within {DATABASE_TIMEOUT:.0f} s"


@dataclass(kw_only=True)
class ProbeCache:
    """The store's probe takes the write lock for a moment: run it at most every ``every``
    seconds (``/healthz`` is open to anyone; the watchdog pings twice a second under tests)
    and carry its last finding in between."""

    every: float
    clock: Callable[[], float] = time.monotonic
    _next: float = 0.0
    _problem: str | None = None

    def due(self) -> bool:
        return self.clock() >= self._next

    def apply(self, readings: Readings, *, probed: bool) -> Readings:
        """``readings`` with the last probe's finding when this round did not probe."""
        if probed:
            self._next = self.clock() + self.every
            self._problem = readings.store_problem
            return readings
        if readings.store_problem is None and self._problem is not None:
            return replace(readings, store_problem=self._problem)
        return readings


def progress_of(components: Sequence[AnyComponent]) -> dict[str, float]:
    """Each looping component's last progress (the API server has none to report)."""
    found: dict[str, float] = {}
    for component in components:
        last = component.progress()
        if last is not None:
            found[component.name] = last
    return found


async def gather(store: HealthSource, components: Sequence[AnyComponent], *,
                 providers: Iterable[str], uncommitted_since: float | None,
                 started_wall: float, probes: ProbeCache | None = None) -> Readings:
    """The live readings ``judge`` decides on (``uncommitted_since``: the scheduler's)."""
    probe = probes is None or probes.due()
    oldest_due, problem = await store_reading(store, providers, probe=probe)
    readings = Readings(now=time.monotonic(), progress=progress_of(components),
                    uncommitted_since=uncommitted_since, wall_now=time.time(),
                    started_wall=started_wall, oldest_due_wall=oldest_due,
                    store_problem=problem)
    return readings if probes is None else probes.apply(readings, probed=probe)
