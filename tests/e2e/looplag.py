"""Issue 16's "event-loop lag stays under 100 ms", read from the daemon's own gauge.

``callwatch_event_loop_lag_seconds`` is the worst oversleep of the daemon's 0.1 s sleep over
the last 60 s, so one read after an attack covers the attack. An oversleep is the time some
callback held the loop *plus* the time the loop's thread waited for a CPU. On this loaded
2-core machine (load average 7 to 8 while these were written) the second part alone is
large: three runs of each attack read 30 to 80 ms mostly, but 160 to 410 ms now and then,
with the gauge at 10 to 15 ms just before the attack, and each of those runs had the loop's
thread wait 300 to 380 ms for a CPU within a 0.3 s span. That wait is the
machine's doing, not the attack's, and the kernel counts it: the second
field of ``/proc/PID/schedstat`` is the nanoseconds the daemon's main thread (the event
loop's) spent runnable but not running. ``Control`` samples it every 50 ms for the whole
test; the daemon's lag must stay under 100 ms plus the most CPU wait it suffered in any
0.3 s span (a tick and its oversleep). Without load that allowance is about zero and the
bound is the issue's 100 ms; a callback that holds the loop adds to the lag, never to the
wait, and fails the test whatever the load. (The gauge carries no time, so the allowance is
the worst wait anywhere in the test, not at the moment of the worst lag: a loose pairing,
and the reason the allowance is only ever the wait the kernel measured.)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

BOUND = 0.1  # seconds: the figure
GAUGE = "callwatch_event_loop_lag_seconds"
SPAN = 0.3  # seconds: one 0.1 s tick and an oversleep past the bound


class Control:
    """The most CPU wait the daemon's event-loop thread suffered in any ``SPAN``."""

    def __init__(self, pid: int) -> None:
        self._path = Path(f"/proc/{pid}/schedstat")
        self._stop = threading.Event()
        self._worst = 0.0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        recent: deque[tuple[float, float]] = deque()
        while not self._stop.is_set():
            try:
                waited = int(self._path.read_text().split()[1]) / 1e9
            except (OSError, IndexError, ValueError):
                return  # the daemon is gone
            now = time.monotonic()
            recent.append((now, waited))
            while recent and recent[0][0] < now - SPAN:
                recent.popleft()
            self._worst = max(self._worst, waited - recent[0][1])
            self._stop.wait(0.05)

    def worst(self) -> float:
        """The most CPU wait in any ``SPAN`` so far (seconds)."""
        return self._worst

    def stop(self) -> None:
        """End the sampling (a test's ``finally``); idempotent."""
        self._stop.set()
        self._thread.join(5)


def loop_lag(port: int, token: str) -> float:
    """The daemon's gauge, read from /metrics."""
    reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10,
                      headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 200, reply.text
    for family in text_string_to_metric_families(reply.text):
        if family.name == GAUGE:
            return float(family.samples[0].value)
    raise AssertionError(f"no {GAUGE} in /metrics")


def assert_loop_lag_low(port: int, token: str, control: Control) -> None:
    """The daemon's loop lag stays under 100 ms, beyond its main thread's wait for a CPU."""
    lag = loop_lag(port, token)
    if lag < BOUND:
        return
    waited = control.worst()
    assert lag < BOUND + waited, (
        f"event-loop lag {lag * 1000:.0f} ms; the loop's thread waited for a CPU"
        f" {waited * 1000:.0f} ms at most in any {SPAN} s")
