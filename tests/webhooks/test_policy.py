"""The retry policy: a pure function, checked by example and over every kind of outcome."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.retry_after import parse_retry_after
from worker.webhooks.policy import (
    JITTER,
    MAX_RETRY_AFTER,
    Dead,
    Delivered,
    Disabled,
    Outcome,
    Retry,
    decide,
)

NOW = 1_800_000_000.0
SCHEDULE = (5.0, 300.0, 1800.0)

statuses = st.integers(min_value=100, max_value=599)
outcomes = st.one_of(
    st.builds(Outcome, status=statuses,
              retry_after=st.none() | st.floats(min_value=0, max_value=1e7)),
    st.builds(Outcome, error=st.sampled_from(["ConnectError: refused", "no answer within 2 s"])),
)
schedules = st.lists(st.floats(min_value=0, max_value=1e6), max_size=8).map(tuple)
attempts = st.integers(min_value=1, max_value=12)
rngs = st.floats(min_value=0, max_value=1, exclude_max=True)


@settings(max_examples=1000)
@given(attempt=attempts, outcome=outcomes, schedule=schedules, rng=rngs)
def test_every_outcome_gets_exactly_the_contract_decision(attempt: int, outcome: Outcome,
                                                          schedule: tuple[float, ...],
                                                          rng: float) -> None:
    """2xx delivered, 410 disables, else retry on the jittered schedule (Retry-After on
    429/503 as a floor, capped) until it runs out, then dead."""
    decision = decide(attempt=attempt, outcome=outcome, schedule=schedule, now=NOW, rng=rng)
    status = outcome.status
    if status is not None and 200 <= status < 300:
        assert decision == Delivered()
    elif status == 410:
        assert isinstance(decision, Disabled)
    elif attempt > len(schedule):
        assert isinstance(decision, Dead)
        assert f"after {attempt} attempt" in decision.reason
    else:
        assert isinstance(decision, Retry)
        step = schedule[attempt - 1]
        low, high = step * (1 - JITTER), step * (1 + JITTER)
        floor = 0.0
        if status in (429, 503) and outcome.retry_after is not None:
            floor = min(outcome.retry_after, MAX_RETRY_AFTER)
        delay = decision.at - NOW
        assert delay >= floor - 1e-6
        assert low - 1e-6 <= delay <= max(high, floor) + 1e-6
        assert decision.reason == outcome.describe()


@settings(max_examples=300)
@given(attempt=attempts, outcome=outcomes, schedule=schedules, rng=rngs)
def test_decisions_are_deterministic_and_never_in_the_past(attempt: int, outcome: Outcome,
                                                           schedule: tuple[float, ...],
                                                           rng: float) -> None:
    """The same inputs give the same decision, and a retry is never scheduled before now."""
    first = decide(attempt=attempt, outcome=outcome, schedule=schedule, now=NOW, rng=rng)
    assert first == decide(attempt=attempt, outcome=outcome, schedule=schedule, now=NOW, rng=rng)
    if isinstance(first, Retry):
        assert first.at >= NOW


@given(status=st.sampled_from([500, 502, 404, 400, 401, 302, 307, 308, 418]),
       retry_after=st.floats(min_value=0, max_value=1e6))
def test_retry_after_is_ignored_unless_throttled(status: int, retry_after: float) -> None:
    """Only 429 and 503 may stretch the wait; other failures follow the schedule alone."""
    decision = decide(attempt=1, outcome=Outcome(status=status, retry_after=retry_after),
                      schedule=(10.0,), now=NOW, rng=0.5)
    assert decision == Retry(at=NOW + 10.0, reason=Outcome(status=status).describe())


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_longer_than_the_schedule_wins(status: int) -> None:
    """429/503 with Retry-After: 120 waits 120 s although the schedule says 5."""
    decision = decide(attempt=1, outcome=Outcome(status=status, retry_after=120),
                      schedule=SCHEDULE, now=NOW, rng=0.5)
    assert decision == Retry(at=NOW + 120, reason=f"HTTP {status}")


def test_huge_retry_after_is_capped_at_an_hour() -> None:
    """A Retry-After of a week cannot park a delivery (and its call's later events) for a week."""
    decision = decide(attempt=1, outcome=Outcome(status=429, retry_after=7 * 86400),
                      schedule=SCHEDULE, now=NOW, rng=0.5)
    assert decision == Retry(at=NOW + MAX_RETRY_AFTER, reason="HTTP 429")


def test_schedule_gives_one_attempt_more_than_its_steps() -> None:
    """[5, 300, 1800]: attempts 1-3 are retried after 5, 300, 1800 s; attempt 4 is the last."""
    failed = Outcome(status=500)
    waits = [decide(attempt=n, outcome=failed, schedule=SCHEDULE, now=NOW, rng=0.5)
             for n in (1, 2, 3)]
    assert [w.at - NOW for w in waits if isinstance(w, Retry)] == [5.0, 300.0, 1800.0]
    last = decide(attempt=4, outcome=failed, schedule=SCHEDULE, now=NOW, rng=0.5)
    assert last == Dead(reason="HTTP 500; gave up after 4 attempts")


def test_jitter_spreads_ten_percent_either_way() -> None:
    """rng 0 retries 10 % early, rng near 1 about 10 % late."""
    early = decide(attempt=1, outcome=Outcome(status=500), schedule=(100.0,), now=0, rng=0.0)
    late = decide(attempt=1, outcome=Outcome(status=500), schedule=(100.0,), now=0,
                  rng=0.999999)
    assert isinstance(early, Retry) and isinstance(late, Retry)
    assert early.at == pytest.approx(90.0)
    assert late.at == pytest.approx(110.0, abs=1e-3)


@pytest.mark.parametrize(("outcome", "reason"), [
    (Outcome(status=302), "HTTP 302 (redirects are not followed)"),
    (Outcome(status=500), "HTTP 500"),
    (Outcome(error="ConnectError: [Errno 111] Connection refused"),
     "ConnectError: [Errno 111] Connection refused"),
    (Outcome(), "no answer"),
])
def test_failure_reasons_read_well(outcome: Outcome, reason: str) -> None:
    """A redirect says it was not followed; a network error keeps its own words."""
    assert outcome.describe() == reason


def test_gone_disables_even_on_the_last_attempt() -> None:
    """410 disables the endpoint rather than killing one delivery, whatever the attempt."""
    decision = decide(attempt=99, outcome=Outcome(status=410), schedule=(), now=NOW, rng=0.5)
    assert isinstance(decision, Disabled)


@pytest.mark.parametrize(("value", "seconds"), [
    (None, None),
    ("120", 120.0),
    (" 7 ", 7.0),
    ("Fri, 15 Jan 2027 08:00:30 GMT", 30.0),
    ("Fri, 15 Jan 2027 07:59:00 GMT", 0.0),  # in the past: retry as soon as the schedule says
    ("Fri, 15 Jan 2027 08:00:30 -0000", 30.0),
    ("soon", None),
    ("-5", None),
    ("1.5", 1.5),
    ("\u00b2", None),  # superscript two: str.isdigit says yes, float() says no
    ("\u0663", None),  # Arabic-Indic three
    ("99999999999", None),
])
def test_retry_after_parses_seconds_and_http_dates(value: str | None,
                                                   seconds: float | None) -> None:
    """Retry-After is delta-seconds or an HTTP date; anything else is ignored."""
    now = 1_800_000_000.0  # Fri, 15 Jan 2027 08:00:00 GMT
    assert parse_retry_after(value, now, cap=MAX_RETRY_AFTER) == seconds


@given(st.text(max_size=40), st.floats(min_value=0, max_value=1e6))
@settings(max_examples=300)
def test_retry_after_never_raises_and_stays_within_the_cap(value: str, cap: float) -> None:
    """Whatever a receiver or provider sends, the parser answers None or [0, cap], never raises."""
    seconds = parse_retry_after(value, NOW, cap=cap)
    assert seconds is None or 0.0 <= seconds <= cap
