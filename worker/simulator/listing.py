"""The two list endpoints: Ultravox ``GET /api/calls`` and Envoy ``GET /api/v1/calls``.

As PROVIDERS.md describes them. Ultravox pages with an opaque ``cursor`` (here a keyset: the
created time and id of the page's last call, so calls added meanwhile never shift a page) and
answers ``{next, previous, results, total}`` with ``next``/``previous`` as full URLs, null at
the ends; ``fromDate``/``toDate`` are inclusive, ``sort`` is ``created`` or ``-created`` (the
default, newest first). Envoy pages by number (``page`` from 1, ``page_size`` default 20, at
most 100), newest first, filters ``status``, ``start_date``/``end_date``, and answers
``{data, pagination}``.

The list faults of ``faults.py`` (malformed items, a foreign ``next``, looping pages, a page
of 10 000 items) are acted out here, because only a list handler knows what a page is.

Listing 100 000 calls page by page must not sort them for every page: the sorted index of a
provider's calls is kept until its number of calls changes (calls are only ever added).
"""

from __future__ import annotations

import base64
import bisect
import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

from worker.simulator.api import Reply
from worker.simulator.asgi import Request
from worker.simulator.faults import Fault, Rule
from worker.simulator.world import CallScript, World, new_call_id

HUGE_PAGE_ITEMS = 10_000
FOREIGN_ORIGIN = "http://lists.attacker.invalid"
ULTRAVOX_PAGE_SIZE = 100
ULTRAVOX_MAX_PAGE_SIZE = 1000
ENVOY_PAGE_SIZE = 20
ENVOY_MAX_PAGE_SIZE = 100

Key = tuple[float, str]  # (created_at, call_id): the one order both lists use


class BadQueryError(ValueError):
    """A query parameter the provider would refuse; the message is the reply's detail."""


class Index:
    """One provider's calls sorted oldest first, rebuilt only when calls were added."""

    def __init__(self, world: World, provider: str) -> None:
        self._world = world
        self._provider = provider
        self._count = -1
        self.keys: list[Key] = []
        self.scripts: list[CallScript] = []

    def refresh(self) -> None:
        count = self._world.count(self._provider)
        if count == self._count:
            return
        scripts = sorted(self._world.calls(self._provider), key=lambda s: (s.created_at, s.call_id))
        self.scripts = scripts
        self.keys = [(s.created_at, s.call_id) for s in scripts]
        self._count = count

    def window(self, since: float | None, until: float | None) -> tuple[int, int]:
        """The index range ``[lo, hi)`` of calls created within ``[since, until]``."""
        lo = 0 if since is None else bisect.bisect_left(self.keys, (since, ""))
        hi = len(self.keys) if until is None else bisect.bisect_right(self.keys, (until, "\uffff"))
        return lo, max(lo, hi)


def query(request: Request) -> dict[str, str]:
    """The query string's parameters, last value wins."""
    return {k: v[-1] for k, v in parse_qs(request.query.decode("latin-1")).items()}


def parse_time(value: str | None, *, end_of_day: bool = False) -> float | None:
    """RFC 3339 (or a bare date) to POSIX seconds; BadQueryError when unreadable."""
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadQueryError(f"Invalid datetime: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    stamp = parsed.timestamp()
    if end_of_day and len(value) == 10:  # a bare date: the whole day is inclusive
        stamp += 86_400 - 1e-6
    return stamp


def page_size(params: dict[str, str], name: str, default: int, maximum: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise BadQueryError(f"{name} must be an integer from 1 to {maximum}")
    return int(raw)


def _choice(params: dict[str, str], name: str, allowed: tuple[str, ...]) -> str:
    """``params[name]``, one of ``allowed`` (the first is the default)."""
    value = params.get(name, allowed[0])
    if value not in allowed:
        raise BadQueryError(f"{name} must be one of {', '.join(allowed)}")
    return value


def origin(request: Request) -> str:
    """Where the client reached us, for the full URLs of ``next`` and ``previous``."""
    scheme = str(request.scope.get("scheme", "http"))
    return f"{scheme}://{request.header(b'host') or 'localhost'}"


def encode_cursor(key: Key) -> str:
    return base64.urlsafe_b64encode(f"{key[0]!r}~{key[1]}".encode()).decode()


def decode_cursor(cursor: str) -> Key:
    try:
        created, call_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("~", 1)
        return float(created), call_id
    except (ValueError, UnicodeDecodeError):
        raise BadQueryError("Invalid cursor.") from None


def _mangle(items: list[dict[str, Any]], id_key: str, time_key: str) -> None:
    """Every other item loses its id or gets an unreadable creation time, in turn."""
    for n, item in enumerate(items[1::2]):
        if n % 2 == 0:
            item.pop(id_key, None)
        else:
            item[time_key] = "the day before yesterday"


def _huge(provider: str, make: Callable[[CallScript, float], dict[str, Any]],
          now: float) -> list[dict[str, Any]]:
    """``HUGE_PAGE_ITEMS`` made-up calls: no call anyone could poll afterwards."""
    made = []
    for _ in range(HUGE_PAGE_ITEMS):
        script = CallScript(provider=provider, call_id=new_call_id(provider), created_at=now)
        made.append(make(script, now))
    return made


def ultravox_list(world: World, index: Index, request: Request,
                  make: Callable[[CallScript, float], dict[str, Any]]) -> Reply:
    """``GET /api/calls``: one page, keyset-paged by ``cursor``."""
    try:
        params = query(request)
        size = page_size(params, "pageSize", ULTRAVOX_PAGE_SIZE, ULTRAVOX_MAX_PAGE_SIZE)
        since, until = parse_time(params.get("fromDate")), parse_time(params.get("toDate"))
        sort = _choice(params, "sort", ("-created", "created"))
        cursor = decode_cursor(params["cursor"]) if params.get("cursor") else None
    except BadQueryError as exc:
        return Reply(400, {"detail": str(exc)})
    now = world.clock()
    index.refresh()
    lo, hi = index.window(since, until)
    if sort == "created":
        start = lo if cursor is None else max(lo, bisect.bisect_right(index.keys, cursor))
        chosen = _first(size, (index.scripts[i] for i in range(start, hi)), now)
        more = bool(chosen) and bisect.bisect_right(index.keys, _key(chosen[-1])) < hi
    else:
        stop = hi if cursor is None else min(hi, bisect.bisect_left(index.keys, cursor))
        chosen = _first(size, (index.scripts[i] for i in range(stop - 1, lo - 1, -1)), now)
        more = bool(chosen) and bisect.bisect_left(index.keys, _key(chosen[-1])) > lo
    results = [make(s, now) for s in chosen]
    base = f"{origin(request)}/api/calls"
    rule: Rule | None = request.fault
    next_url = None
    if more:
        next_url = _with(base, params, cursor=encode_cursor(_key(chosen[-1])))
    previous = _with(base, params, cursor=params["cursor"]) if cursor is not None else None
    if rule is not None:
        if rule.kind is Fault.MALFORMED_ITEMS:
            _mangle(results, "callId", "created")
        elif rule.kind is Fault.FOREIGN_NEXT:
            next_url = _with(FOREIGN_ORIGIN + "/api/calls", params,
                             cursor=encode_cursor(_key(chosen[-1]) if chosen else (now, "")))
        elif rule.kind is Fault.LOOPING_PAGES:
            next_url = _with(base, params, cursor=params.get("cursor", ""))
        elif rule.kind is Fault.HUGE_PAGE:
            results = _huge("ultravox", make, now)
    total = hi - lo
    return Reply(200, {"next": next_url, "previous": previous, "results": results,
                       "total": total})


def envoy_list(world: World, index: Index, request: Request,
               make: Callable[[CallScript, float], dict[str, Any]]) -> Reply:
    """``GET /api/v1/calls``: one numbered page, newest first."""
    try:
        params = query(request)
        size = page_size(params, "page_size", ENVOY_PAGE_SIZE, ENVOY_MAX_PAGE_SIZE)
        page = page_size(params, "page", 1, 10**9)
        since = parse_time(params.get("start_date"))
        until = parse_time(params.get("end_date"), end_of_day=True)
    except BadQueryError as exc:
        return Reply(422, {"detail": [{"msg": str(exc), "type": "value_error"}]})
    now = world.clock()
    index.refresh()
    lo, hi = index.window(since, until)
    status = params.get("status")
    matching = [s for s in reversed(index.scripts[lo:hi]) if not s.gone(now)]
    if status:
        matching = [s for s in matching if make(s, now)["status"] == status.upper()]
    total = len(matching)
    total_pages = max(1, -(-total // size))
    rule: Rule | None = request.fault
    if rule is not None and rule.kind is Fault.LOOPING_PAGES:
        data = [make(s, now) for s in matching[:size]]  # the first page, again and again
        pagination = {"page": page, "page_size": size, "total_count": 10**9,
                      "total_pages": 10**9, "has_next": True, "has_prev": page > 1}
        return Reply(200, {"data": data, "pagination": pagination})
    data = [make(s, now) for s in matching[(page - 1) * size: page * size]]
    if rule is not None and rule.kind is Fault.MALFORMED_ITEMS:
        _mangle(data, "id", "created_at")
    elif rule is not None and rule.kind is Fault.HUGE_PAGE:
        data = _huge("envoy", make, now)
    pagination = {"page": page, "page_size": size, "total_count": total,
                  "total_pages": total_pages, "has_next": page < total_pages,
                  "has_prev": page > 1}
    return Reply(200, {"data": data, "pagination": pagination})


def _first(size: int, scripts: Iterator[CallScript], now: float) -> list[CallScript]:
    """The first ``size`` calls that have not vanished: a page costs its size, not the list's."""
    return list(itertools.islice((s for s in scripts if not s.gone(now)), size))


def _key(script: CallScript) -> Key:
    return script.created_at, script.call_id


def _with(base: str, params: dict[str, str], **changes: str) -> str:
    merged = {**params, **changes}
    return f"{base}?{urlencode(merged)}"
