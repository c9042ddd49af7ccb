"""Reconcile: the contract's event rules, by example and by property over random histories."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.config import TrackingConfig
from worker.model import (
    TERMINAL_EVENTS,
    CallStatus,
    Event,
    FailureKind,
    NotFound,
    PollFailed,
    PollResult,
    RecordingSnapshot,
    RecordingStatus,
    Snapshot,
    Terminal,
    TrackedCall,
)
from worker.reconcile import (
    ARCHIVE_WAIT_POLL,
    TOO_MANY_RECORDINGS,
    Archived,
    ArchiveFailed,
    Decision,
    Policy,
    on_archive,
    on_poll,
)

T0 = 1_800_000_000.0
TRACKING = TrackingConfig(poll_interval=10, pending_poll_interval=30, recording_poll_interval=5,
                          recording_grace=900, not_found_grace=300, max_tracking_age=86400)
POLICY = Policy(tracking=TRACKING, archiving=False)
ARCHIVING = Policy(tracking=TRACKING, archiving=True)


def new_call() -> TrackedCall:
    return TrackedCall(provider="ultravox", call_id="c1", tracked_at=T0, next_poll_at=T0, pk=1)


def snap(status: CallStatus, *recs: RecordingSnapshot, expected: bool | None = None,
         started: float | None = None, ended: float | None = None) -> Snapshot:
    return Snapshot(status=status, provider_status=str(status), started_at=started,
                    ended_at=ended, recordings=recs, recording_expected=expected)


def rec(rec_id: str, status: RecordingStatus, url: str | None = "https://x/r") -> RecordingSnapshot:
    return RecordingSnapshot(id=rec_id, status=status, url=url)


def types(decision: Decision) -> list[str]:
    return [str(e.type) for e in decision.events]


def test_pending_call_emits_nothing_and_polls_at_pending_interval() -> None:
    """A call that has not started yet emits no event and is polled at pending_poll_interval."""
    d = on_poll(new_call(), snap(CallStatus.PENDING), T0, POLICY, jitter=0.5)
    assert d.events == ()
    assert d.call.next_poll_at == T0 + 30


def test_live_then_ended_then_recording_then_completed() -> None:
    """The ordinary life: started, ended, recording available, completed - each once."""
    d1 = on_poll(new_call(), snap(CallStatus.LIVE, started=T0), T0 + 1, POLICY)
    assert types(d1) == ["call.started"]
    assert d1.call.next_poll_at == T0 + 1 + 10
    d2 = on_poll(d1.call, snap(CallStatus.ENDED, started=T0, ended=T0 + 60), T0 + 61, POLICY)
    assert types(d2) == ["call.ended"]
    assert d2.call.next_poll_at == T0 + 61 + 5
    d3 = on_poll(d2.call, snap(CallStatus.ENDED, rec("r", RecordingStatus.AVAILABLE)), T0 + 70,
                 POLICY)
    assert types(d3) == ["recording.available", "call.completed"]
    assert d3.call.terminal == Terminal.COMPLETED


def test_repeated_snapshot_emits_nothing_new() -> None:
    """Polling the same state again (a retried poll) never repeats an event."""
    s = snap(CallStatus.LIVE, started=T0)
    d1 = on_poll(new_call(), s, T0, POLICY)
    d2 = on_poll(d1.call, s, T0 + 10, POLICY)
    assert types(d1) == ["call.started"]
    assert d2.events == ()


def test_call_seen_first_as_ended_with_start_emits_started_then_ended() -> None:
    """A short call that started and ended between two polls still gets both events, in order."""
    d = on_poll(new_call(), snap(CallStatus.ENDED, started=T0, ended=T0 + 5,
                                 expected=False), T0 + 10, POLICY)
    assert types(d) == ["call.started", "call.ended", "call.completed"]


def test_unjoined_call_has_no_started_event() -> None:
    """A call nobody joined never reports a start, so no call.started is invented."""
    d = on_poll(new_call(), snap(CallStatus.ENDED, ended=T0 + 5, expected=False), T0 + 10, POLICY)
    assert types(d) == ["call.ended", "call.completed"]


def test_no_recording_completes_only_after_grace() -> None:
    """Without a recording or a provider hint, completion waits for recording_grace."""
    d = on_poll(new_call(), snap(CallStatus.ENDED, ended=T0), T0 + 1, POLICY)
    assert types(d) == ["call.ended"]
    d = on_poll(d.call, snap(CallStatus.ENDED, ended=T0), T0 + 899, POLICY)
    assert d.events == ()
    d = on_poll(d.call, snap(CallStatus.ENDED, ended=T0), T0 + 900, POLICY)
    assert types(d) == ["call.completed"]


def test_grace_counts_from_tracking_for_calls_that_ended_long_ago() -> None:
    """A call tracked after it ended still gets recording_grace from when we started tracking."""
    d = on_poll(new_call(), snap(CallStatus.ENDED, ended=T0 - 10_000), T0 + 1, POLICY)
    assert types(d) == ["call.ended"]


def test_processing_recording_past_grace_fails_then_call_completes() -> None:
    """A recording stuck in processing past recording_grace is reported failed, then completed."""
    d = on_poll(new_call(), snap(CallStatus.ENDED, rec("r", RecordingStatus.PROCESSING),
                                 ended=T0), T0 + 1, POLICY)
    assert types(d) == ["call.ended"]
    d = on_poll(d.call, snap(CallStatus.ENDED, rec("r", RecordingStatus.PROCESSING), ended=T0),
                T0 + 901, POLICY)
    assert types(d) == ["recording.failed", "call.completed"]
    assert d.call.recordings[0].reason == "not available within recording_grace"


def test_recording_failed_at_provider() -> None:
    """The provider's own failure is passed on as recording.failed and settles the recording."""
    d = on_poll(new_call(), snap(CallStatus.ENDED, rec("r", RecordingStatus.FAILED), ended=T0),
                T0 + 1, POLICY)
    assert types(d) == ["call.ended", "recording.failed", "call.completed"]


def test_settled_recording_never_moves_back() -> None:
    """A recording reported failed stays failed even if a later snapshot says available."""
    d = on_poll(new_call(), snap(CallStatus.LIVE, rec("r", RecordingStatus.FAILED)), T0, POLICY)
    d = on_poll(d.call, snap(CallStatus.LIVE, rec("r", RecordingStatus.AVAILABLE)), T0 + 1,
                POLICY)
    assert d.events == ()
    assert d.call.recordings[0].status == RecordingStatus.FAILED


def test_fresh_link_updates_url_without_event() -> None:
    """A new signed URL for an announced recording is kept, silently."""
    d = on_poll(new_call(), snap(CallStatus.LIVE, rec("r", RecordingStatus.AVAILABLE, "u1")),
                T0, ARCHIVING)
    d = on_poll(d.call, snap(CallStatus.LIVE, rec("r", RecordingStatus.AVAILABLE, "u2")),
                T0 + 1, ARCHIVING)
    assert d.events == ()
    assert d.call.recordings[0].url == "u2"


def test_status_never_goes_backwards() -> None:
    """An ended call that a provider later reports live again stays ended."""
    d = on_poll(new_call(), snap(CallStatus.ENDED, rec("r", RecordingStatus.PROCESSING)), T0,
                POLICY)
    d = on_poll(d.call, snap(CallStatus.LIVE), T0 + 1, POLICY)
    assert d.call.status == CallStatus.ENDED
    assert d.events == ()


def test_with_archiving_completion_waits_for_the_archiver() -> None:
    """When archiving, call.completed comes only after the recording is archived."""
    d = on_poll(new_call(), snap(CallStatus.ENDED, rec("r", RecordingStatus.AVAILABLE)), T0,
                ARCHIVING)
    assert types(d) == ["call.ended", "recording.available"]
    assert d.call.next_poll_at >= T0 + 300 * 0.9  # only a safety-net poll while archiving
    d = on_archive(d.call, "r", Archived(path="a/b.wav", size=3, sha256="ab"), T0 + 2, ARCHIVING)
    assert types(d) == ["recording.archived", "call.completed"]
    body = d.events[0].data["recording"]
    assert body["archive"] == {"path": "a/b.wav", "size": 3, "sha256": "ab"}
    again = on_archive(d.call, "r", Archived(path="x", size=1, sha256="x"), T0 + 3, ARCHIVING)
    assert again.events == ()


def test_archive_failure_settles_the_recording() -> None:
    """recording.archive_failed carries the reason and lets the call complete."""
    d = on_poll(new_call(), snap(CallStatus.ENDED, rec("r", RecordingStatus.AVAILABLE)), T0,
                ARCHIVING)
    d = on_archive(d.call, "r", ArchiveFailed(reason="gone"), T0 + 2, ARCHIVING)
    assert types(d) == ["recording.archive_failed", "call.completed"]
    assert d.events[0].data["recording"]["reason"] == "gone"


def test_not_found_fails_after_grace_only() -> None:
    """404 is tolerated for not_found_grace, then call.tracking_failed ends tracking."""
    d = on_poll(new_call(), NotFound(), T0, POLICY)
    assert d.events == () and d.call.not_found_since == T0
    d = on_poll(d.call, NotFound(), T0 + 299, POLICY)
    assert d.events == ()
    d = on_poll(d.call, NotFound(), T0 + 300, POLICY)
    assert types(d) == ["call.tracking_failed"]
    assert d.call.terminal == Terminal.TRACKING_FAILED
    assert "not found" in d.events[0].data["reason"]


def test_found_again_resets_not_found_clock() -> None:
    """A call that answers again after a 404 starts a fresh not_found_grace next time."""
    d = on_poll(new_call(), NotFound(), T0, POLICY)
    d = on_poll(d.call, snap(CallStatus.PENDING), T0 + 200, POLICY)
    d = on_poll(d.call, NotFound(), T0 + 400, POLICY)
    assert d.events == () and d.call.not_found_since == T0 + 400


def test_max_tracking_age_gives_up() -> None:
    """A call tracked longer than max_tracking_age gets call.tracking_failed, even mid-failure."""
    d = on_poll(new_call(), PollFailed(kind=FailureKind.TRANSIENT, message="x"), T0 + 86400,
                POLICY)
    assert types(d) == ["call.tracking_failed"]


def test_failures_back_off_and_honour_retry_after() -> None:
    """Failed polls back off exponentially; a longer Retry-After wins; 401 waits at least 60 s."""
    d = on_poll(new_call(), PollFailed(kind=FailureKind.TRANSIENT, message="x"), T0, POLICY)
    assert d.call.next_poll_at == T0 + 2 and d.call.consecutive_failures == 1
    d = on_poll(d.call, PollFailed(kind=FailureKind.TRANSIENT, message="x"), T0, POLICY)
    assert d.call.next_poll_at == T0 + 4
    d = on_poll(new_call(), PollFailed(kind=FailureKind.RATE_LIMITED, message="x",
                                       retry_after=42), T0, POLICY)
    assert d.call.next_poll_at == T0 + 42
    d = on_poll(new_call(), PollFailed(kind=FailureKind.CONFIG, message="x"), T0, POLICY)
    assert d.call.next_poll_at == T0 + 60
    d = on_poll(d.call, snap(CallStatus.LIVE), T0 + 60, POLICY)
    assert d.call.consecutive_failures == 0


def test_jitter_spreads_within_ten_percent() -> None:
    """The next poll lands within +-10 % of the interval, driven only by the jitter argument."""
    low = on_poll(new_call(), snap(CallStatus.LIVE), T0, POLICY, jitter=0.0)
    high = on_poll(new_call(), snap(CallStatus.LIVE), T0, POLICY, jitter=0.999999)
    assert low.call.next_poll_at == T0 + 9
    assert 10.99 < high.call.next_poll_at - T0 < 11


def test_terminal_call_is_frozen() -> None:
    """Nothing is emitted or changed for a call after its terminal event."""
    d = on_poll(new_call(), snap(CallStatus.ENDED, expected=False), T0, POLICY)
    assert d.call.terminal == Terminal.COMPLETED
    again = on_poll(d.call, snap(CallStatus.ENDED, rec("r", RecordingStatus.AVAILABLE)), T0 + 1,
                    POLICY)
    assert again.call == d.call and again.events == ()


def test_event_bodies_carry_the_contract_fields() -> None:
    """Call events hold every field CONTRACT.md lists; recording events hold theirs."""
    call = new_call().replace(metadata={"ticket": 7})
    d = on_poll(call, snap(CallStatus.ENDED, rec("r", RecordingStatus.AVAILABLE), started=T0,
                           ended=T0 + 3), T0 + 4, POLICY)
    by_type = {str(e.type): e for e in d.events}
    assert set(by_type["call.ended"].data) >= {"provider", "call_id", "status", "provider_status",
                                               "started_at", "ended_at", "end_reason",
                                               "metadata", "recordings"}
    assert by_type["call.ended"].data["metadata"] == {"ticket": 7}
    assert set(by_type["recording.available"].data) == {"provider", "call_id", "metadata",
                                                        "recording"}
    assert set(by_type["recording.available"].data["recording"]) >= {"id", "status",
                                                                     "content_type", "size"}
    assert "url" not in by_type["recording.available"].data["recording"]


# --------------------------------------------------------------------------- properties

REC_IDS = ("a", "b", "c")
rec_snapshots = st.builds(
    RecordingSnapshot,
    id=st.sampled_from(REC_IDS),
    status=st.sampled_from([RecordingStatus.PROCESSING, RecordingStatus.AVAILABLE,
                            RecordingStatus.FAILED]),
    url=st.none() | st.just("https://files/x"),
)
snapshots = st.builds(
    Snapshot,
    status=st.sampled_from(list(CallStatus)),
    provider_status=st.sampled_from(["x", "y"]),
    started_at=st.none() | st.just(T0),
    ended_at=st.none() | st.just(T0 + 1),
    recordings=st.lists(rec_snapshots, max_size=3, unique_by=lambda r: r.id).map(tuple),
    recording_expected=st.sampled_from([None, True, False]),
    recording_unlikely=st.booleans(),
)
poll_results: st.SearchStrategy[PollResult] = st.one_of(
    snapshots,
    st.just(NotFound()),
    st.builds(PollFailed, kind=st.sampled_from(list(FailureKind)), message=st.just("x"),
              retry_after=st.none() | st.floats(0, 100)),
)


@dataclass(frozen=True)
class ArchiveStep:
    recording_id: str
    ok: bool


steps = st.lists(
    st.tuples(st.floats(0, 400), st.one_of(poll_results,
                                           st.builds(ArchiveStep, st.sampled_from(REC_IDS),
                                                     st.booleans()))),
    max_size=40,
)
policies = st.builds(
    Policy,
    tracking=st.builds(TrackingConfig, recording_grace=st.sampled_from([1.0, 200.0, 900.0]),
                       not_found_grace=st.sampled_from([1.0, 300.0]),
                       max_tracking_age=st.sampled_from([500.0, 5000.0, 86400.0]),
                       max_recordings_per_call=st.sampled_from([1, 2, 100])),
    archiving=st.booleans(),
)


def run_history(policy: Policy, history: list[tuple[float, object]]) -> tuple[TrackedCall,
                                                                              list[Event]]:
    call, now = new_call(), T0
    emitted: list[Event] = []
    for advance, step in history:
        now += advance
        if isinstance(step, ArchiveStep):
            outcome: Archived | ArchiveFailed = (
                Archived(path="p", size=1, sha256="s") if step.ok else ArchiveFailed(reason="r"))
            decision = on_archive(call, step.recording_id, outcome, now, policy)
        else:
            assert isinstance(step, Snapshot | NotFound | PollFailed)
            decision = on_poll(call, step, now, policy, jitter=0.3)
            again = on_poll(decision.call, step, now, policy, jitter=0.3)
            assert again.events == (), "the same poll applied twice emitted again"
        if call.terminal is not None:
            assert decision.events == () and decision.call == call
        assert len(decision.call.recordings) <= policy.tracking.max_recordings_per_call
        if decision.call.terminal is None and not isinstance(step, ArchiveStep):
            assert decision.call.next_poll_at > now
        call = decision.call
        emitted.extend(decision.events)
    return call, emitted


@settings(max_examples=600, deadline=None)
@given(policies, steps)
def test_every_event_at_most_once_and_terminal_last(policy: Policy,
                                                    history: list[tuple[float, object]]) -> None:
    """Over any history, each event key is emitted once at most, and the terminal one is last."""
    call, emitted = run_history(policy, history)
    keys = [e.key for e in emitted]
    assert len(keys) == len(set(keys))
    terminals = [i for i, e in enumerate(emitted) if e.type in TERMINAL_EVENTS]
    assert len(terminals) <= 1
    if terminals:
        assert terminals[0] == len(emitted) - 1
        assert call.terminal is not None
    else:
        assert call.terminal is None


@settings(max_examples=600, deadline=None)
@given(policies, steps)
def test_events_respect_causal_order(policy: Policy, history: list[tuple[float, object]]) -> None:
    """started before ended, ended before completed, available before archived, and completed
    only when every recording is settled."""
    call, emitted = run_history(policy, history)
    order = [e.key for e in emitted]

    def before(a: str, b: str) -> None:
        if b in order:
            assert a in order and order.index(a) < order.index(b), (a, b, order)

    if "call.started" in order:
        before("call.started", "call.ended")
    before("call.ended", "call.completed")
    for rid in REC_IDS:
        before(f"recording.available:{rid}", f"recording.archived:{rid}")
        before(f"recording.available:{rid}", f"recording.archive_failed:{rid}")
        assert not (f"recording.available:{rid}" in order
                    and f"recording.failed:{rid}" in order
                    and order.index(f"recording.failed:{rid}")
                    < order.index(f"recording.available:{rid}"))
    if call.terminal == Terminal.COMPLETED:
        settled = ({RecordingStatus.FAILED, RecordingStatus.ARCHIVED,
                    RecordingStatus.ARCHIVE_FAILED} if policy.archiving
                   else {RecordingStatus.AVAILABLE, RecordingStatus.FAILED,
                         RecordingStatus.ARCHIVED, RecordingStatus.ARCHIVE_FAILED})
        assert all(r.status in settled for r in call.recordings)
        assert call.status == CallStatus.ENDED


# --------------------------------------------------------------------------- hostile replies


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(1, 20), extra=st.integers(1, 200),
       status=st.sampled_from(list(CallStatus)), archiving=st.booleans())
def test_too_many_recordings_ends_in_one_tracking_failed(
    limit: int, extra: int, status: CallStatus, archiving: bool
) -> None:
    """A reply listing more recordings than the cap: no recording event, one tracking_failed."""
    tracking = TrackingConfig(max_recordings_per_call=limit)
    recs = tuple(rec(f"r{i}", RecordingStatus.AVAILABLE) for i in range(limit + extra))
    d = on_poll(new_call(), snap(status, *recs, started=T0, ended=T0 + 1), T0 + 2,
                Policy(tracking=tracking, archiving=archiving))
    assert not any(t.startswith("recording.") for t in types(d))
    assert types(d)[-1] == "call.tracking_failed"
    assert len(d.events) <= 3
    assert d.call.terminal == Terminal.TRACKING_FAILED
    assert d.call.recordings == ()
    assert d.events[-1].data["reason"].startswith(TOO_MANY_RECORDINGS)


def test_recordings_are_counted_across_polls() -> None:
    """Ids that change from poll to poll still count: the call never holds more than the cap."""
    policy = Policy(tracking=TrackingConfig(max_recordings_per_call=2), archiving=True)
    d1 = on_poll(new_call(), snap(CallStatus.ENDED, rec("a", RecordingStatus.AVAILABLE),
                                  rec("b", RecordingStatus.PROCESSING)), T0, policy)
    d2 = on_poll(d1.call, snap(CallStatus.ENDED, rec("a", RecordingStatus.AVAILABLE),
                               rec("b", RecordingStatus.AVAILABLE)), T0 + 5, policy)
    assert types(d2) == ["recording.available"]
    d3 = on_poll(d2.call, snap(CallStatus.ENDED, rec("c", RecordingStatus.AVAILABLE)), T0 + 10,
                 policy)
    assert types(d3) == ["call.tracking_failed"]
    assert [r.id for r in d3.call.recordings] == ["a", "b"]


def unlikely(ended: float) -> Snapshot:
    return Snapshot(status=CallStatus.ENDED, provider_status="ended", ended_at=ended,
                    recording_unlikely=True)


def test_recording_unlikely_keeps_checking_with_back_off_until_grace() -> None:
    """Recording disabled is a hint: checks thin out, and the call completes only after grace."""
    call, now = new_call(), T0
    gaps: list[float] = []
    emitted: list[str] = []
    while call.terminal is None:
        d = on_poll(call, unlikely(T0), now, POLICY, jitter=0.5)
        call = d.call
        emitted.extend(str(e.type) for e in d.events)
        if call.terminal is None:
            gaps.append(call.next_poll_at - now)
            now = call.next_poll_at
    assert emitted == ["call.ended", "call.completed"]
    assert now >= T0 + TRACKING.recording_grace
    assert gaps[0] == TRACKING.recording_poll_interval
    assert max(gaps) <= ARCHIVE_WAIT_POLL
    assert gaps[:-1] == sorted(gaps[:-1]) and gaps[-2] > 4 * gaps[0]  # it backs off
    assert len(gaps) < 20  # instead of 180 checks at recording_poll_interval


def test_recording_found_despite_the_hint_is_kept() -> None:
    """A recording that appears although recording was disabled is announced as usual."""
    d1 = on_poll(new_call(), unlikely(T0), T0, POLICY)
    assert types(d1) == ["call.ended"]
    d2 = on_poll(d1.call, snap(CallStatus.ENDED, rec("r", RecordingStatus.AVAILABLE), ended=T0),
                 T0 + 60, POLICY)
    assert types(d2) == ["recording.available", "call.completed"]
