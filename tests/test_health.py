"""The health verdict (/healthz and the watchdog): a pure function over typed readings."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from worker.health import Limits, ProbeCache, Readings, judge, overdue_for
from worker.logbudget import LogBudget

LIMITS = Limits(progress=30.0, uncommitted=60.0, overdue=600.0)
times = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@st.composite
def readings(draw: st.DrawFn) -> Readings:
    now = draw(times)
    wall_now = draw(st.floats(min_value=1e9, max_value=2e9, allow_nan=False))
    progress = draw(st.dictionaries(st.sampled_from(["scheduler", "relay", "archiver"]),
                                    st.floats(min_value=now - 1000, max_value=now)))
    return Readings(
        now=now, progress=progress,
        uncommitted_since=draw(st.none() | st.floats(min_value=now - 1000, max_value=now)),
        wall_now=wall_now,
        started_wall=draw(st.floats(min_value=wall_now - 5000, max_value=wall_now)),
        oldest_due_wall=draw(st.none() | st.floats(min_value=wall_now - 5000,
                                                   max_value=wall_now + 100)),
        store_problem=draw(st.none() | st.just("the database does not answer")))


@given(readings())
def test_healthy_exactly_when_no_rule_is_broken(r: Readings) -> None:
    """ok iff every loop progressed, the writer commits, polls keep up and the store works."""
    broken = (any(r.now - last > LIMITS.progress for last in r.progress.values())
              or (r.uncommitted_since is not None
                  and r.now - r.uncommitted_since > LIMITS.uncommitted)
              or overdue_for(r) > LIMITS.overdue
              or r.store_problem is not None)
    verdict = judge(r, LIMITS)
    assert verdict.ok is (not broken)
    assert bool(verdict.problems) is broken


@given(readings(), st.floats(min_value=61, max_value=1e5))
def test_a_writer_that_cannot_commit_is_unhealthy_whatever_the_lanes_say(
        r: Readings, held: float) -> None:
    """Results held uncommitted past the limit fail health even with fresh lane progress."""
    fresh = Readings(now=r.now, progress=dict.fromkeys(r.progress, r.now),
                     uncommitted_since=r.now - held, wall_now=r.wall_now,
                     started_wall=r.started_wall)
    verdict = judge(fresh, LIMITS)
    assert not verdict.ok
    assert any("could not be committed" in p for p in verdict.problems)


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=10**5))
def test_overdue_counts_from_the_process_start_at_the_earliest(backlog: int,
                                                               uptime: int) -> None:
    """A backlog left by a long stop is not held against a daemon that just started."""
    now = 2_000_000_000.0
    r = Readings(now=0.0, progress={}, wall_now=now, started_wall=now - uptime,
                 oldest_due_wall=now - uptime - backlog)
    assert overdue_for(r) == uptime
    assert judge(r, LIMITS).ok is (uptime <= LIMITS.overdue)


def test_the_problems_name_what_is_wrong() -> None:
    """Each broken rule is one readable line in the verdict."""
    r = Readings(now=1000.0, progress={"scheduler": 900.0, "relay": 999.0},
                 uncommitted_since=800.0, wall_now=5000.0, started_wall=1000.0,
                 oldest_due_wall=3000.0, store_problem="the database file was replaced")
    assert judge(r, LIMITS).problems == (
        "the scheduler made no progress for 100 s",
        "poll results could not be committed for 200 s",
        "the most overdue poll is 2000 s late",
        "the database file was replaced")


@given(st.integers(min_value=1, max_value=20), st.integers(min_value=0, max_value=200))
def test_log_budget_allows_a_burst_then_counts_the_rest(burst: int, attempts: int) -> None:
    """Within one period: `burst` lines pass, the others are counted, never lost."""
    budget = LogBudget(burst=burst, period=60.0, clock=lambda: 5.0)
    allowed = sum(budget.allow() for _ in range(attempts))
    assert allowed == min(burst, attempts)
    assert budget.take_suppressed() == max(0, attempts - burst)
    assert budget.take_suppressed() == 0


def test_log_budget_refills_after_the_period() -> None:
    """A new period allows a new burst."""
    now = [0.0]
    budget = LogBudget(burst=1, period=60.0, clock=lambda: now[0])
    assert budget.allow() and not budget.allow()
    now[0] = 61.0
    assert budget.allow()


def test_probe_cache_probes_at_most_every_period_and_keeps_the_finding() -> None:
    """Between two probes the last probe's problem stands; a fresh failure is never hidden."""
    now = [0.0]
    cache = ProbeCache(every=5.0, clock=lambda: now[0])
    bad = Readings(now=0.0, progress={}, store_problem="the database file was replaced")
    good = Readings(now=0.0, progress={})
    assert cache.due()
    assert cache.apply(bad, probed=True) == bad
    now[0] = 4.0
    assert not cache.due()
    assert cache.apply(good, probed=False).store_problem == "the database file was replaced"
    other = Readings(now=0.0, progress={}, store_problem="the database does not answer")
    assert cache.apply(other, probed=False) == other
    now[0] = 5.0
    assert cache.due()
    assert cache.apply(good, probed=True) == good
    assert cache.apply(good, probed=False) == good
