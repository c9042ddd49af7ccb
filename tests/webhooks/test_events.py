"""Event bodies: every type the code emits matches the published schema, and stays < 20 KB."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import ValidationError

from tests.webhooks.schema import SCHEMA_PATH, check_body
from worker.config import TrackingConfig
from worker.events import MAX_BODY, TEXT_CAP, body, call_event, recording_event
from worker.model import (
    CallStatus,
    Event,
    EventType,
    NotFound,
    RecordingSnapshot,
    RecordingState,
    RecordingStatus,
    Snapshot,
    TrackedCall,
)
from worker.reconcile import Archived, ArchiveFailed, Policy, on_archive, on_poll

T0 = 1_800_000_000.0
TRACKING = TrackingConfig(recording_grace=60, not_found_grace=30)
ARCHIVING = Policy(tracking=TRACKING, archiving=True)


def new_call(call_id: str, **changes: Any) -> TrackedCall:
    return TrackedCall(provider="ultravox", call_id=call_id, tracked_at=T0, next_poll_at=T0,
                       pk=1, **{"metadata": {"ticket": 42, "tags": ["a", "é"]}, **changes})


def every_kind_of_history() -> list[Event]:
    """Drive reconcile through all eight event types, the way the daemon does."""
    events: list[Event] = []
    recs = (RecordingSnapshot(id="r1", status=RecordingStatus.AVAILABLE, url="https://x/1",
                              content_type="audio/wav", size=1234),
            RecordingSnapshot(id="r2", status=RecordingStatus.FAILED),
            RecordingSnapshot(id="r3", status=RecordingStatus.AVAILABLE))
    live = on_poll(new_call("a"), Snapshot(status=CallStatus.LIVE, provider_status="joined",
                                            started_at=T0), T0 + 1, ARCHIVING)
    ended = on_poll(live.call, Snapshot(status=CallStatus.ENDED, provider_status="ended",
                                        started_at=T0, ended_at=T0 + 60, end_reason="hangup",
                                        recordings=recs), T0 + 61, ARCHIVING)
    archived = on_archive(ended.call, "r1", Archived(path="ultravox/a/r1.wav", size=1234,
                                                     sha256="ab" * 32), T0 + 62, ARCHIVING)
    done = on_archive(archived.call, "r3", ArchiveFailed(reason="HTTP 403 from the provider"),
                      T0 + 63, ARCHIVING)
    ghost = new_call("b")
    missing = on_poll(ghost, NotFound(), T0, ARCHIVING)
    gone = on_poll(missing.call, NotFound(), T0 + 31, ARCHIVING)
    for decision in (live, ended, archived, done, missing, gone):
        events += decision.events
    return events


def test_every_event_type_the_code_emits_matches_the_schema() -> None:
    """All eight types, built by reconcile, validate (strictly: no undocumented field)."""
    events = every_kind_of_history()
    assert {e.type for e in events} == set(EventType)
    for event in events:
        document = check_body(body(event))
        assert document["type"] == str(event.type)


def test_schema_rejects_what_the_contract_does_not_allow() -> None:
    """The schema is not a rubber stamp: a wrong status, a missing field, a bad time fail."""
    good = json.loads(body(every_kind_of_history()[0]))
    broken = [
        {**good, "type": "call.exploded"},
        {**good, "timestamp": "yesterday"},
        {**good, "data": {**good["data"], "status": "ringing"}},
        {key: value for key, value in good.items() if key != "data"},
        {**good, "data": {k: v for k, v in good["data"].items() if k != "call_id"}},
    ]
    for document in broken:
        with pytest.raises(ValidationError):
            check_body(json.dumps(document).encode())


def test_small_bodies_are_not_touched() -> None:
    """Trimming never changes a body that already fits."""
    for event in every_kind_of_history():
        envelope = {"type": str(event.type), "timestamp": json.loads(body(event))["timestamp"],
                    "data": event.data}
        assert body(event) == json.dumps(envelope, ensure_ascii=False,
                                         separators=(",", ":")).encode()


def test_hundreds_of_recordings_are_trimmed_with_a_count() -> None:
    """A call with 500 recordings: the body keeps what fits and says how many it left out."""
    recs = tuple(RecordingState(id=f"rec-{n:04d}", status=RecordingStatus.AVAILABLE,
                                content_type="audio/wav", size=n) for n in range(500))
    call = new_call("a", recordings=recs, status=CallStatus.ENDED)
    document = check_body(encoded := body(call_event(EventType.CALL_COMPLETED, call, T0)))
    assert len(encoded) <= MAX_BODY
    data = document["data"]
    assert data["recordings_omitted"] == 500 - len(data["recordings"]) > 0
    assert data["recordings"][0]["id"] == "rec-0000"
    assert data["metadata"] == {"ticket": 42, "tags": ["a", "é"]}


@st.composite
def outsized_calls(draw: st.DrawFn) -> tuple[TrackedCall, RecordingState]:
    """An ended call with up to 300 recordings and provider strings up to 60 000 chars."""
    text = draw(st.text(max_size=20)) * draw(st.integers(min_value=0, max_value=3000))
    rec_id = draw(st.text(min_size=1, max_size=20)) * draw(st.integers(1, 3000))
    repeat = draw(st.integers(min_value=0, max_value=400))
    meta = {key: value * repeat if isinstance(value, str) else value
            for key, value in draw(st.dictionaries(st.text(max_size=20),
                                                   st.integers() | st.text(max_size=20),
                                                   max_size=5)).items()}
    rec = RecordingState(id=rec_id, status=RecordingStatus.FAILED, reason=text,
                         content_type=text[:100] or None)
    recs = tuple(RecordingState(id=f"{rec_id[:20]}-{i}", status=RecordingStatus.PROCESSING)
                 for i in range(draw(st.integers(min_value=0, max_value=300))))
    call = new_call("a", metadata=meta, provider_status=text, end_reason=text,
                    recordings=(*recs, rec), status=CallStatus.ENDED, terminal_reason=text)
    return call, rec


@settings(max_examples=60, deadline=None)
@given(outsized_calls())
def test_every_body_fits_in_20_kb_and_matches_the_schema(
        drawn: tuple[TrackedCall, RecordingState]) -> None:
    """Whatever the provider sends (long strings, many recordings), bodies stay valid and
    under 20 KB; a recording event keeps its recording."""
    call, rec = drawn
    for event in (call_event(EventType.CALL_TRACKING_FAILED, call, T0),
                  recording_event(EventType.RECORDING_FAILED, call, rec, T0)):
        encoded = body(event)
        assert len(encoded) <= MAX_BODY
        document = check_body(encoded)
        if event.recording_id is not None:
            assert document["data"]["recording"]["id"] in (rec.id, rec.id[:TEXT_CAP])


def test_the_consumer_docs_show_a_valid_example_of_every_type() -> None:
    """docs/webhooks.md has one example body per event type, each valid against the schema."""
    text = (SCHEMA_PATH.parent / "webhooks.md").read_text(encoding="utf-8")
    bodies = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]
    examples = [b for b in bodies if isinstance(b, dict) and "type" in b]
    for example in examples:
        check_body(json.dumps(example).encode())
    assert sorted(e["type"] for e in examples) == sorted(str(t) for t in EventType)
