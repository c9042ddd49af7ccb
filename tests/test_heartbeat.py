"""Heartbeats: how a worker row is judged, what status shows, the last error kept."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from worker.cli.status import daemon_json, daemon_lines
from worker.heartbeat import judge, overall, progress_at
from worker.logs import ErrorMemory
from worker.store.base import Heartbeat
from worker.terminal import WIDTH

T0 = 1_800_000_000.0


def row(owner: str, beat_at: float, error: str | None = None) -> Heartbeat:
    return Heartbeat(owner=owner, host="h", pid=42, version="1.2.3", started_at=T0 - 3600,
                     beat_at=beat_at, progress_at=beat_at, last_error=error,
                     last_error_at=beat_at - 60 if error else None)


@given(ages=st.lists(st.floats(min_value=0, max_value=1e6), max_size=5),
       dead=st.sets(st.integers(min_value=0, max_value=4)))
def test_a_row_runs_only_with_a_recent_beat_and_a_live_process(ages: list[float],
                                                               dead: set[int]) -> None:
    """running iff the beat is within the bound and the process is not known gone."""
    rows = [row(f"h:{i}:x", T0 - a) for i, a in enumerate(ages)]
    states = judge(rows, T0, "h", is_dead=lambda owner, _host: int(owner.split(":")[1]) in dead,
                   stale_after=30.0)
    for i, (age, state) in enumerate(zip(ages, states, strict=True)):
        assert (state.state == "running") == (age <= 30.0 and i not in dead)
        assert (state.why is None) == (state.state == "running")
    assert overall(states) == ("running" if any(s.state == "running" for s in states)
                               else "stale" if states else "stopped")


def test_status_lines_fit_and_say_stopped_running_or_stale() -> None:
    """One line per worker (and its last error), each within 100 columns."""
    assert daemon_lines([], T0) == ["daemon: stopped (no worker has a heartbeat on this database)"]
    states = judge([row("h:1:x", T0 - 2, "store.unhealthy: " + "x" * 300),
                    row("h:2:y", T0 - 300)], T0, "h", is_dead=lambda *_: False)
    lines = daemon_lines(states, T0)
    assert lines[0].startswith("daemon: running (pid 42 on h, up 59m, version 1.2.3")
    assert lines[1].startswith("  last error 1m ago: store.unhealthy: xxx")
    assert lines[2].startswith("daemon: stale (") and "its heartbeat stopped" in lines[2]
    assert all(len(line) <= WIDTH for line in lines)
    data = daemon_json(states[1], T0)
    assert data["state"] == "stale" and data["last_heartbeat_age_seconds"] == 300


def test_the_error_memory_keeps_the_last_error_level_event_only() -> None:
    """Info and warnings pass by; an error's event and its error field are kept."""
    memory = ErrorMemory()
    memory(None, "warning", {"event": "poll.failed", "error": "timeout"})
    assert kept(memory) is None
    memory(None, "error", {"event": "store.unhealthy", "problem": "disk full"})
    assert kept(memory) == "store.unhealthy: disk full"


def kept(memory: ErrorMemory) -> str | None:
    return memory.last[1] if memory.last is not None else None


def test_progress_is_the_oldest_component_loop_in_wall_time() -> None:
    """The heartbeat's progress time is the least recent component's."""
    class Loop:
        def __init__(self, at: float | None, name: str) -> None:
            self.at, self.name = at, name

        def progress(self) -> float | None:
            return self.at

    loops: list[Any] = [Loop(90.0, "a"), Loop(95.0, "b"), Loop(None, "api")]
    assert progress_at(loops, 100.0, T0) == T0 - 10
    assert progress_at(loops[2:], 100.0, T0) is None
