"""The pure sweep decisions: windows, what is tracked, where the mark goes (hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from worker.discovery_plan import OVERLAP, Window, floor_of, mark_after, sweep_window, wanted

times = st.floats(min_value=0, max_value=1e9, allow_nan=False)
maybe_times = st.none() | times


@given(configured=maybe_times, first=times)
def test_floor_is_discover_since_else_first_run(configured: float | None, first: float) -> None:
    """discover_since wins; without it the floor is when discovery first ran."""
    assert floor_of(configured, first) == (first if configured is None else configured)


@given(floor=times, mark=maybe_times, now=times)
def test_window_never_reaches_below_the_floor(floor: float, mark: float | None,
                                              now: float) -> None:
    """A sweep never lists calls created before the floor (unless the floor is in the future)."""
    window = sweep_window(floor=floor, mark=mark, now=now)
    assert window.until == now
    assert window.since <= now
    if floor <= now:
        assert window.since >= floor
    if mark is not None and floor <= mark - OVERLAP <= now:
        assert window.since == mark - OVERLAP


@given(created=maybe_times, since=times, until=maybe_times)
def test_wanted_is_the_inclusive_window(created: float | None, since: float,
                                        until: float | None) -> None:
    """Tracked: no time given, or a time inside [since, until] (ends included)."""
    window = Window(since=since, until=until)
    expected = created is None or (created >= since and (until is None or created <= until))
    assert wanted(created, window) is expected
    assert wanted(since, window) is (until is None or since <= until)


@given(old=maybe_times, since=times, until=times, complete=st.booleans(),
       ordered=st.booleans(), newest=maybe_times)
def test_mark_never_moves_back_nor_past_the_sweep_start(
    *, old: float | None, since: float, until: float, complete: bool, ordered: bool,
    newest: float | None,
) -> None:
    """The mark is monotonic, and a sweep moves it at most to the time it began."""
    new = mark_after(old=old, window=Window(since=since, until=until), complete=complete,
                     ordered=ordered, newest_read=newest)
    if old is not None:
        assert new is not None and new >= old
    if new is not None and new != old:
        assert new <= until
    if not complete and not ordered:
        assert new == old


@given(
    floor=st.floats(min_value=0, max_value=1000),
    sweeps=st.lists(st.floats(min_value=1, max_value=500), min_size=1, max_size=20),
    calls=st.lists(st.tuples(st.floats(min_value=0, max_value=5000),
                             st.floats(min_value=0, max_value=OVERLAP)), max_size=30),
    cut=st.lists(st.booleans(), max_size=20),
)
def test_no_call_is_missed_if_it_is_listed_within_the_overlap(
    floor: float, sweeps: list[float], calls: list[tuple[float, float]], cut: list[bool],
) -> None:
    """Every call created after the floor and listed at most OVERLAP late is seen by a sweep.

    Simulated: sweeps at increasing times; a sweep cut short (unordered provider) keeps the
    mark; a call (created c, listed from c + d) is seen by a sweep at t when t >= c + d and c
    is inside that sweep's window. The last sweep is complete and late enough for all of them.
    """
    now, mark = floor, None
    seen: set[int] = set()
    times_: list[float] = []
    for step in sweeps:
        now += step
        times_.append(now)
    end = max(times_[-1], max((c + d for c, d in calls), default=0)) + 1
    times_.append(end)
    for n, t in enumerate(times_):
        window = sweep_window(floor=floor, mark=mark, now=t)
        complete = n == len(times_) - 1 or not (cut[n] if n < len(cut) else False)
        for i, (c, d) in enumerate(calls):
            if complete and c + d <= t and wanted(c, window):
                seen.add(i)
        mark = mark_after(old=mark, window=window, complete=complete, ordered=False,
                          newest_read=None)
    expected = {i for i, (c, _) in enumerate(calls) if floor <= c <= end}
    assert seen == expected
