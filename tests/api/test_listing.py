"""GET /v1/calls (keyset pages) and DELETE /v1/calls/{provider}/{call_id}, over real HTTP."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.api.support import ENVOY_ID
from worker.api.listing import decode_cursor, encode_cursor
from worker.store.base import CallCursor, NewCall
from worker.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


@given(tracked_at=st.floats(allow_nan=False, allow_infinity=False),
       pk=st.integers(min_value=0, max_value=2**63 - 1))
def test_a_cursor_reads_back_exactly(tracked_at: float, pk: int) -> None:
    """Every page end survives the round trip through its opaque text, float bits and all."""
    cursor = CallCursor(tracked_at=tracked_at, pk=pk)
    assert decode_cursor(encode_cursor(cursor)) == cursor


@given(text=st.text(max_size=40))
def test_anything_else_is_not_a_cursor(text: str) -> None:
    """Arbitrary text is either a well-formed cursor or a ValueError, never another error."""
    try:
        cursor = decode_cursor(text)
    except ValueError:
        return
    assert isinstance(cursor.pk, int)


async def _track(store: SQLiteStore, count: int) -> None:
    for i in range(count):
        assert await store.track(NewCall(provider="envoy", call_id=f"{ENVOY_ID}{i}"),
                                 1_800_000_000.0 + i)


async def test_pages_follow_the_cursor_newest_first(client: httpx.AsyncClient,
                                                    store: SQLiteStore) -> None:
    """Three pages of 2 cover 5 calls once each, newest first; the last has no cursor."""
    await _track(store, 5)
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(3):
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        reply = await client.get("/v1/calls", params=params)
        assert reply.status_code == 200, reply.text
        page = reply.json()
        seen += [c["call_id"] for c in page["calls"]]
        cursor = page["next_cursor"]
    assert seen == [f"{ENVOY_ID}{i}" for i in (4, 3, 2, 1, 0)] and cursor is None


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=x", "state=dead",
                                   "provider=nosuch", "cursor=abc", "page=2",
                                   "limit=1&limit=2"])
async def test_bad_list_parameters_are_400(client: httpx.AsyncClient, query: str) -> None:
    """Every bad parameter is a 400 with one line, never a 500 or a silent default."""
    reply = await client.get(f"/v1/calls?{query}")
    assert reply.status_code == 400 and reply.json()["error"]


async def test_delete_untracks_and_lists_as_untracked(client: httpx.AsyncClient,
                                                      store: SQLiteStore) -> None:
    """DELETE: 204 (twice), 404 for an unknown call, 400 for an unknown provider."""
    await _track(store, 2)
    first = await client.delete(f"/v1/calls/envoy/{ENVOY_ID}0")
    assert first.status_code == 204 and first.content == b""
    assert "content-length" not in first.headers
    assert (await client.delete(f"/v1/calls/envoy/{ENVOY_ID}0")).status_code == 204
    assert (await client.delete(f"/v1/calls/envoy/{ENVOY_ID}9")).status_code == 404
    assert (await client.delete(f"/v1/calls/nosuch/{ENVOY_ID}0")).status_code == 400
    listed = (await client.get("/v1/calls", params={"state": "untracked"})).json()
    assert [c["call_id"] for c in listed["calls"]] == [f"{ENVOY_ID}0"]
    assert listed["calls"][0]["untracked_at"] is not None
    detail = (await client.get(f"/v1/calls/envoy/{ENVOY_ID}0")).json()
    assert detail["state"] == "untracked" and detail["next_poll_at"] is None
