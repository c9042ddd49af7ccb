"""``TrackedCall.replace`` is a hand-made fast copy: it must match ``dataclasses.replace``."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.model import CallStatus, RecordingState, RecordingStatus, TrackedCall

FIELDS = [f.name for f in dataclasses.fields(TrackedCall)]
BASE = TrackedCall(
    provider="ultravox", call_id="c1", tracked_at=1.0, status=CallStatus.LIVE,
    provider_status="joined", metadata={"a": 1}, webhook_url="http://127.0.0.1/h",
    recordings=(RecordingState(id="r", status=RecordingStatus.PROCESSING),),
    started_notified=True, consecutive_failures=2, next_poll_at=5.0, pk=7)
VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5),
                   st.floats(allow_nan=False), st.sampled_from(list(CallStatus)))


@given(st.dictionaries(st.sampled_from(FIELDS), VALUES))
def test_replace_matches_dataclasses_replace(changes: dict[str, Any]) -> None:
    fast = BASE.replace(**changes)
    assert fast == dataclasses.replace(BASE, **changes)
    assert type(fast) is TrackedCall
    assert BASE.replace() == BASE and BASE.replace() is not BASE


def test_replace_refuses_an_unknown_field_like_dataclasses() -> None:
    with pytest.raises(TypeError, match="no_such_field"):
        BASE.replace(no_such_field=1)
    with pytest.raises(TypeError):
        dataclasses.replace(BASE, no_such_field=1)  # type: ignore[call-arg]


def test_the_copy_is_still_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        BASE.replace(pk=8).pk = 9  # type: ignore[misc]
