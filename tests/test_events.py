"""Message ids and timestamps are part of the contract: hand-made fast paths must not move them."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from worker.events import event_id, rfc3339

YEAR_2200 = 7258118400.0


def reference_id(provider: str, call_id: str, key: str) -> str:
    """The id as first shipped: base64's own base32, lower case, unpadded."""
    digest = hashlib.sha256(f"{provider}\0{call_id}\0{key}".encode()).digest()
    return "msg_" + base64.b32encode(digest[:20]).decode().lower().rstrip("=")


def reference_time(ts: float) -> str:
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_a_known_id_never_changes() -> None:
    assert event_id("ultravox", "3f2b8a1e-5c4d-4e6f-8a9b-0c1d2e3f4a5b", "call.ended") == (
        "msg_b477somemxypzyfv5yzfo5qcli5uq34g")


@given(st.text(), st.text(), st.text())
def test_ids_match_the_base32_of_the_digest(provider: str, call_id: str, key: str) -> None:
    try:
        expected = reference_id(provider, call_id, key)
    except UnicodeEncodeError:  # lone surrogates: neither can encode them
        return
    assert event_id(provider, call_id, key) == expected
    assert len(expected) == 36


def test_known_times() -> None:
    assert rfc3339(None) is None
    assert rfc3339(0.0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1795000000.1239) == "2026-11-18T11:06:40.123Z"
    assert rfc3339(1.9999996) == "1970-01-01T00:00:02.000Z"  # rounded to µs first, as before
    assert rfc3339(-1.5) == "1969-12-31T23:59:58.500Z"


@given(st.floats(min_value=-1e9, max_value=YEAR_2200))
def test_times_match_isoformat(ts: float) -> None:
    assert rfc3339(ts) == reference_time(ts)
