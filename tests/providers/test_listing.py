"""The list readers: one page parsed into calls, hostile items skipped, foreign `next` refused."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from structlog.testing import capture_logs

from tests.providers.support import API_KEY, ENVOY_ID, UUID_ID, Routes, make_config
from worker.model import FailureKind, PollFailed
from worker.providers._http import MAX_BODY
from worker.providers.listing import EnvoyLister, Page, UltravoxLister, make_lister
from worker.signed_urls import parse_timestamp

pytestmark = pytest.mark.anyio

CREATED = "2026-12-01T10:00:00.000000Z"
OTHER_ID = "11111111-2222-4333-8444-555555555555"


def uv_item(call_id: str = UUID_ID, created: Any = CREATED) -> dict[str, Any]:
    return {"callId": call_id, "created": created, "ended": None, "metadata": {}}


def client(routes: Routes) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(routes))


async def test_ultravox_page_is_parsed_and_sent_with_the_key() -> None:
    """Each result becomes (callId, created); next stays when it is on the API's origin."""
    nxt = "https://api.ultravox.ai/api/calls?cursor=abc&pageSize=100"
    routes = Routes({"/api/calls": httpx.Response(200, json={
        "next": nxt, "previous": None, "results": [uv_item(), uv_item(OTHER_ID)], "total": 2})})
    async with client(routes) as http:
        lister = UltravoxLister(make_config("ultravox"), http)
        url = lister.first_url(1_764_583_200.0, None)
        page = await lister.page(url)
    assert isinstance(page, Page)
    assert [c.call_id for c in page.calls] == [UUID_ID, OTHER_ID]
    assert page.calls[0].created == parse_timestamp(CREATED)
    assert page.next_url == nxt and page.skipped == 0
    sent = routes.requests[0]
    assert sent.headers["X-API-Key"] == API_KEY
    query = parse_qs(urlsplit(str(sent.url)).query)
    assert query["sort"] == ["created"] and query["fromDate"] == ["2025-12-01T10:00:00.000000Z"]


async def test_malformed_items_are_skipped_and_logged() -> None:
    """An item without an id, with a bad id or an unreadable date is skipped; the rest stay."""
    results = [uv_item(), {"created": CREATED}, uv_item("../../etc"), uv_item(OTHER_ID, "soon"),
               "not an object", uv_item(OTHER_ID)]
    routes = Routes({"/api/calls": httpx.Response(200, json={
        "next": None, "previous": None, "results": results, "total": 6})})
    async with client(routes) as http:
        lister = UltravoxLister(make_config("ultravox"), http)
        with capture_logs() as logs:
            page = await lister.page(lister.first_url(None, None))
    assert isinstance(page, Page)
    assert [c.call_id for c in page.calls] == [UUID_ID, OTHER_ID]
    assert page.skipped == 4
    assert [e["event"] for e in logs].count("discovery.bad_item") == 4
    assert API_KEY not in json.dumps(logs, default=str)


@pytest.mark.parametrize("foreign", [
    "https://evil.example/api/calls?cursor=x",
    "http://api.ultravox.ai/api/calls?cursor=x",
    "https://api.ultravox.ai:8443/api/calls?cursor=x",
])
async def test_next_on_another_origin_is_refused(foreign: str) -> None:
    """A `next` on another scheme, host or port ends the sweep: our key never goes there."""
    routes = Routes({"/api/calls": httpx.Response(200, json={
        "next": foreign, "previous": None, "results": [uv_item()], "total": 9})})
    async with client(routes) as http:
        lister = UltravoxLister(make_config("ultravox"), http)
        with capture_logs() as logs:
            page = await lister.page(lister.first_url(None, None))
    assert isinstance(page, Page)
    assert page.next_url is None and page.refused_next and len(page.calls) == 1
    assert "discovery.foreign_next" in [e["event"] for e in logs]


async def test_a_page_too_large_is_not_read() -> None:
    """A page above MAX_BODY is refused as unparseable, not held in memory."""
    big = {"next": None, "previous": None, "results": [uv_item()] * 20_000, "total": 1}
    assert len(json.dumps(big)) > MAX_BODY
    routes = Routes({"/api/calls": httpx.Response(200, json=big)})
    async with client(routes) as http:
        lister = UltravoxLister(make_config("ultravox"), http)
        page = await lister.page(lister.first_url(None, None))
    assert isinstance(page, PollFailed) and page.kind is FailureKind.TRANSIENT


async def test_rate_limit_is_a_value_with_retry_after() -> None:
    """429 + Retry-After comes back as RATE_LIMITED carrying the provider's wish."""
    routes = Routes({"/api/v1/calls": httpx.Response(429, headers={"Retry-After": "7"})})
    async with client(routes) as http:
        lister = EnvoyLister(make_config("envoy"), http)
        page = await lister.page(lister.first_url(None, None))
    assert isinstance(page, PollFailed)
    assert page.kind is FailureKind.RATE_LIMITED and page.retry_after == 7


def envoy_page(data: list[Any], page: int, has_next: bool) -> dict[str, Any]:
    return {"data": data, "pagination": {"page": page, "page_size": 100, "total_count": 150,
                                         "total_pages": 2, "has_next": has_next,
                                         "has_prev": page > 1}}


async def test_envoy_pages_by_number_with_bearer_auth() -> None:
    """Envoy's next page is page + 1 with the same filters; has_next false ends the list."""
    item = {"id": ENVOY_ID, "status": "COMPLETED", "created_at": "2026-12-01T10:00:00+00:00"}
    no_time = {"id": "call_x", "status": "SCHEDULED", "call_start_time": None}
    routes = Routes({"/api/v1/calls": [
        httpx.Response(200, json=envoy_page([item, {"status": "COMPLETED"}], 1, True)),
        httpx.Response(200, json=envoy_page([no_time], 2, False)),
    ]})
    async with client(routes) as http:
        lister = make_lister(make_config("envoy"), http)
        first = await lister.page(lister.first_url(1_764_583_200.0, 1_764_669_600.0))
        assert isinstance(first, Page) and first.next_url is not None
        second = await lister.page(first.next_url)
    assert isinstance(second, Page)
    assert [c.call_id for c in first.calls] == [ENVOY_ID] and first.skipped == 1
    assert second.calls[0].created is None and second.next_url is None
    query = parse_qs(urlsplit(str(routes.requests[1].url)).query)
    assert query["page"] == ["2"] and query["page_size"] == ["100"]
    assert "start_date" in query and "end_date" in query
    assert routes.requests[0].headers["Authorization"] == f"Bearer {API_KEY}"


async def test_wrong_shape_is_unparseable() -> None:
    """A reply without the documented list field is a failed page, not an empty one."""
    routes = Routes({"/api/v1/calls": httpx.Response(200, json={"calls": []})})
    async with client(routes) as http:
        lister = EnvoyLister(make_config("envoy"), http)
        page = await lister.page(lister.first_url(None, None))
    assert isinstance(page, PollFailed)


def test_apifycloud_has_no_lister() -> None:
    """No list endpoint is documented for apifycloud."""
    with pytest.raises(ValueError, match="no list endpoint"):
        make_lister(make_config("apifycloud"), httpx.AsyncClient())
