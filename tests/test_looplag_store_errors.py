"""The loop-lag monitor and the store-error counter, each on its own."""

from __future__ import annotations

import time

import anyio
import pytest
import structlog

from tests.components import started
from worker.looplag import LoopLagMonitor, LoopLagStats
from worker.store_errors import StoreErrors, operation


def test_lag_is_the_worst_within_the_window() -> None:
    """Old oversleeps leave the window; the largest recent one is reported."""
    stats = LoopLagStats(window=10.0)
    stats.add(0.0, 0.9)
    stats.add(5.0, 0.1)
    assert stats.worst() == 0.9
    stats.add(11.0, 0.05)
    assert stats.worst() == 0.1


@pytest.mark.anyio
async def test_a_blocked_loop_shows_as_lag() -> None:
    """A callback holding the loop for 0.3 s is measured as at least that much lag."""
    async with started(LoopLagMonitor(tick=0.05)) as monitor:
        await anyio.sleep(0.1)
        time.sleep(0.3)  # noqa: ASYNC251 - blocking the loop on purpose
        await anyio.sleep(0.1)
    assert monitor.stats.worst() >= 0.25


def test_store_failure_events_map_to_operations() -> None:
    """store.X_failed -> X, delivery.store_failed -> delivery, anything else -> None."""
    assert operation("store.write_failed") == "write"
    assert operation("store.claim_failed") == "claim"
    assert operation("delivery.store_failed") == "delivery"
    assert operation("poll.failed") is None


def test_counting_counts_logged_refusals_and_then_stops() -> None:
    """While counting, each store failure logged is counted; afterwards logging is as before."""
    errors = StoreErrors()
    log = structlog.get_logger("test")
    with errors.counting():
        log.warning("store.write_failed", what="x")
        log.info("poll.ok")
    log.warning("store.write_failed", what="after")
    assert errors.by_operation["write"] == 1
    assert sum(errors.by_operation.values()) == 1
