"""The providers' list endpoints, one page at a time: what discovery and backfill read.

A lister knows two things: the URL of the first page for a window, and how to read one page
into a ``Page`` (the calls it names, how many items were unreadable, the next page's URL or
None at the end). It never holds more than one page: iteration, pacing and the per-sweep
page bound belong to ``worker/discovery_sweep.py``.

Hostile replies (PROVIDERS.md marks the list shapes documented, but a reply is still input):

* an item without a usable id or creation time is skipped and logged (``discovery.bad_item``);
* an Ultravox ``next`` on another origin is refused (our key would go with it): the page is
  read and the sweep ends there, logged as ``discovery.foreign_next``;
* a body above ``_http.MAX_BODY`` (a page of 10 000 items) is not read: ``PollFailed``, so a
  page costs at most that much memory;
* a 429/503 is ``PollFailed(RATE_LIMITED)`` with its ``Retry-After``, as for a poll.

Ultravox is asked for ``sort=created`` (oldest first), so a sweep that stops half-way knows
everything before its last page has been seen. Envoy documents no order: its pages are read
as unordered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx
import structlog
from structlog.typing import FilteringBoundLogger

from worker.config import ProviderConfig
from worker.model import FailureKind, NotFound, PollFailed
from worker.providers import _fields, _http
from worker.signed_urls import parse_timestamp

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
PAGE_SIZE = 100  # Envoy's documented maximum; Ultravox is asked for the same
LISTABLE = frozenset({"ultravox", "envoy"})


@dataclass(frozen=True, slots=True)
class ListedCall:
    """One call a list page names: its id and when it was created (None: not said)."""

    call_id: str
    created: float | None


@dataclass(frozen=True, slots=True)
class Page:
    """One page, read: its calls, how many items were skipped, and the next page's URL."""

    calls: tuple[ListedCall, ...]
    skipped: int = 0
    next_url: str | None = None
    refused_next: bool = False  # the list went on, on another origin: the sweep is cut short


class CallLister(Protocol):
    """A provider's list endpoint, page by page."""

    name: str
    ordered: bool  # pages come oldest first, so a sweep cut short still proves a prefix

    def first_url(self, since: float | None, until: float | None) -> str:
        """The first page of the calls created in ``[since, until]`` (either end open)."""
        ...

    async def page(self, url: str) -> Page | PollFailed:
        """Read one page; every failure is a value, as for a poll."""
        ...


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


def _timestamp(raw: object) -> float | None:
    """``parse_timestamp``, with a fast path for the RFC 3339 the lists send (a backfill reads
    every call's creation time: the tolerant parser cost a third of its CPU)."""
    if isinstance(raw, str) and len(raw) >= 20 and raw[10] in "Tt":
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            return parse_timestamp(raw)
        if parsed.tzinfo is not None:
            return parsed.timestamp()
    return parse_timestamp(raw)


def _uuid(call_id: str) -> str | None:
    """``_http.check_uuid``, one regex for the usual case of a well-formed id."""
    return None if _UUID.fullmatch(call_id) else _http.check_uuid(call_id)


def _item(item: Any, id_key: str, time_keys: tuple[str, ...], *, time_required: bool,
          check_id: Any) -> ListedCall | None:
    """One list item as a ``ListedCall``; None when it has no usable id or time."""
    if not isinstance(item, Mapping):
        return None
    call_id = item.get(id_key)
    if not isinstance(call_id, str) or check_id(call_id) is not None:
        return None
    for key in time_keys:
        raw = item.get(key)
        if raw is not None:
            created = _timestamp(raw)
            return None if created is None else ListedCall(call_id, created)
    return None if time_required else ListedCall(call_id, None)


def _items(raw: list[Any], log: FilteringBoundLogger, id_key: str, time_keys: tuple[str, ...],
           *, time_required: bool, check_id: Any) -> tuple[tuple[ListedCall, ...], int]:
    calls: list[ListedCall] = []
    skipped = 0
    for n, item in enumerate(raw):
        listed = _item(item, id_key, time_keys, time_required=time_required, check_id=check_id)
        if listed is None:
            skipped += 1
            log.warning("discovery.bad_item", index=n, item=_fields.clip(item))
        else:
            calls.append(listed)
    return tuple(calls), skipped


def _failed(result: NotFound | PollFailed, what: str) -> PollFailed:
    if isinstance(result, PollFailed):
        return result
    return PollFailed(kind=FailureKind.CONFIG, message=f"{what} answered 404")


class UltravoxLister:
    """``GET /api/calls`` (PROVIDERS.md, Ultravox "List")."""

    name = "ultravox"
    ordered = True

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self._base = config.base_url.rstrip("/")
        self._client = client
        self._headers = {"Accept": "application/json"}
        if config.api_key:
            self._headers["X-API-Key"] = config.api_key.reveal()
        self._log = structlog.get_logger("worker.discovery").bind(provider=self.name)

    def first_url(self, since: float | None, until: float | None) -> str:
        params = {"pageSize": str(PAGE_SIZE), "sort": "created"}
        if since is not None:
            params["fromDate"] = rfc3339(since)
        if until is not None:
            params["toDate"] = rfc3339(until)
        return f"{self._base}/api/calls?{urlencode(params)}"

    async def page(self, url: str) -> Page | PollFailed:
        found = await _http.get_json(self._client, url, headers=self._headers, log=self._log,
                                     parse=self._parse)
        return found if isinstance(found, Page) else _failed(found, "GET /api/calls")

    def _parse(self, body: dict[str, Any]) -> Page:
        raw = body.get("results")
        if not isinstance(raw, list):
            raise _fields.UnparseableError("results is not a list")
        calls, skipped = _items(raw, self._log, "callId", ("created",), time_required=True,
                                check_id=_uuid)
        next_url = body.get("next")
        if next_url is not None and not isinstance(next_url, str):
            raise _fields.UnparseableError("next is not a string")
        refused = False
        if next_url:
            next_url = _http.resolve_location(self._base + "/api/calls", next_url)
            if not _http.same_origin(next_url, self._base):
                self._log.warning("discovery.foreign_next", next=_fields.clip(next_url))
                next_url, refused = None, True
        return Page(calls=calls, skipped=skipped, next_url=next_url or None,
                    refused_next=refused)


class EnvoyLister:
    """``GET /api/v1/calls`` (PROVIDERS.md, Envoy "List"): numbered pages, order unknown."""

    name = "envoy"
    ordered = False

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self._base = config.base_url.rstrip("/")
        self._client = client
        self._headers = {"Accept": "application/json"}
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key.reveal()}"
        if config.organization_id:
            self._headers["X-Organization-ID"] = config.organization_id
        self._log = structlog.get_logger("worker.discovery").bind(provider=self.name)

    def first_url(self, since: float | None, until: float | None) -> str:
        return self._url(1, since, until)

    def _url(self, page: int, since: float | None, until: float | None) -> str:
        params = {"page": str(page), "page_size": str(PAGE_SIZE)}
        if since is not None:
            params["start_date"] = rfc3339(since)
        if until is not None:
            params["end_date"] = rfc3339(until)
        return f"{self._base}/api/v1/calls?{urlencode(params)}"

    async def page(self, url: str) -> Page | PollFailed:
        found = await _http.get_json(self._client, url, headers=self._headers, log=self._log,
                                     parse=lambda body: self._parse(body, url))
        return found if isinstance(found, Page) else _failed(found, "GET /api/v1/calls")

    def _parse(self, body: dict[str, Any], url: str) -> Page:
        raw = body.get("data")
        pagination = body.get("pagination")
        if not isinstance(raw, list) or not isinstance(pagination, Mapping):
            raise _fields.UnparseableError("data is not a list or pagination not an object")
        # created_at when the list carries it; the start time otherwise; neither is required
        # (the start_date filter already bounds the window).
        calls, skipped = _items(raw, self._log, "id", ("created_at", "call_start_time"),
                                time_required=False, check_id=_http.check_token)
        page = pagination.get("page")
        has_next = pagination.get("has_next")
        next_url = None
        if has_next is True and isinstance(page, int) and not isinstance(page, bool):
            next_url = _next_page(url, page + 1)
        return Page(calls=calls, skipped=skipped, next_url=next_url)


def _next_page(url: str, page: int) -> str:
    """``url`` with its ``page`` parameter replaced (the rest of the query kept as it was)."""
    base, _, query = url.partition("?")
    parts = [p for p in query.split("&") if p and not p.startswith("page=")]
    return f"{base}?{'&'.join([f'page={page}', *parts])}"


def make_lister(config: ProviderConfig, client: httpx.AsyncClient) -> CallLister:
    """The lister of a provider that has a list endpoint; ValueError for one that has none."""
    if config.name == "ultravox":
        return UltravoxLister(config, client)
    if config.name == "envoy":
        return EnvoyLister(config, client)
    raise ValueError(f"{config.name} documents no list endpoint")
