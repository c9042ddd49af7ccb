"""The world's computed state: phases and recordings as pure functions of script and clock."""

from __future__ import annotations

import re
import time

import pytest

from tests.simulator.conftest import START, FakeClock
from worker.simulator import Phase, RecordingPhase, RecordingScript, World, new_call_id

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_generated_ids_follow_each_provider_format() -> None:
    """Envoy ids are call_<uuid>; Ultravox and apifycloud ids are bare UUID4s."""
    assert re.fullmatch("call_" + UUID4.pattern, new_call_id("envoy"))
    assert UUID4.fullmatch(new_call_id("ultravox"))
    assert UUID4.fullmatch(new_call_id("apifycloud"))
    with pytest.raises(ValueError, match="unknown provider"):
        new_call_id("skype")


def test_phases_follow_the_script(world: World, clock: FakeClock) -> None:
    """A call goes pending -> live -> ended and its recording processing -> available."""
    call = world.add_call(
        "envoy", starts_after=2, lasts=3, recordings=[RecordingScript(ready_after=4)]
    )
    rec = call.recordings[0]
    assert (call.phase(START), call.recording_phase(rec, START)) == (Phase.PENDING, None)
    assert call.phase(START + 2) is Phase.LIVE
    assert call.recording_phase(rec, START + 2) is RecordingPhase.PROCESSING
    assert call.phase(START + 5) is Phase.ENDED
    assert call.recording_phase(rec, START + 8.9) is RecordingPhase.PROCESSING
    assert call.recording_phase(rec, START + 9) is RecordingPhase.AVAILABLE
    assert call.content_type(rec) == "audio/mp4"


def test_a_call_nobody_joins_ends_at_its_join_timeout_without_recording(world: World) -> None:
    """starts_after=None ends the call unjoined at join_timeout; its recording never exists."""
    call = world.add_call("ultravox", starts_after=None, join_timeout=5)
    assert call.phase(START + 4.9) is Phase.PENDING
    assert call.phase(START + 5) is Phase.ENDED
    assert call.unjoined
    assert call.recording_phase(call.recordings[0], START + 100) is None


def test_end_call_ends_a_live_call_now(world: World, clock: FakeClock) -> None:
    """end_call ends a live call now; recordings count from then; a second end is a no-op."""
    call = world.add_call("apifycloud", starts_after=0, lasts=None)
    clock.advance(3)
    ended = world.end_call("apifycloud", call.call_id, reason="agent_hangup")
    assert ended.end_time == START + 3
    assert ended.end_reason == "agent_hangup"
    assert ended.ready_at(ended.recordings[0]) == START + 3 + ended.recordings[0].ready_after
    clock.advance(5)
    assert world.end_call("apifycloud", call.call_id).end_time == START + 3


def test_ending_a_pending_call_leaves_it_unjoined(world: World, clock: FakeClock) -> None:
    """A call ended before anyone joined is unjoined and has no recording."""
    call = world.add_call("ultravox", starts_after=10, lasts=5)
    clock.advance(1)
    ended = world.end_call("ultravox", call.call_id)
    assert ended.unjoined
    assert ended.phase(START + 20) is Phase.ENDED
    assert ended.recording_phase(ended.recordings[0], START + 100) is None


def test_a_vanished_call_is_not_found(world: World, clock: FakeClock) -> None:
    """After vanishes_after the call is gone for the API but its script stays readable."""
    call = world.add_call("envoy", vanishes_after=60)
    assert world.get("envoy", call.call_id) is not None
    clock.advance(60)
    assert world.get("envoy", call.call_id) is None
    assert world.script("envoy", call.call_id) == call


def test_a_hundred_thousand_calls_are_cheap() -> None:
    """100 000 calls are added and their state computed in well under the benchmark budget."""
    world = World()
    began = time.perf_counter()
    calls = [world.add_call("ultravox", starts_after=0, lasts=1) for _ in range(100_000)]
    now = time.time() + 2
    assert all(c.phase(now) is Phase.ENDED for c in calls)
    assert len(world) == 100_000
    assert time.perf_counter() - began < 10  # about 2 s on a slow CI machine
