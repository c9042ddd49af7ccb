"""Fault injection: rules a test can change at runtime, applied per request, seeded.

Each target (a provider API or the file store) has one ``Faults`` holding an ordered list of
rules. For every request the first rule that is active (its window, path filter and count
allow it, and its probability draw succeeds) is the fault of that request; at most one fault
applies. Draws come from a ``random.Random(seed)``, so a given sequence of requests meets the
same faults on every run.

    sim.faults["ultravox"].add(Fault.SERVER_ERROR, count=3)       # a burst: next 3 requests
    sim.faults["envoy"].add(Fault.RATE_LIMIT, probability=0.2)    # 1 in 5, forever
    sim.faults["files"].add(Fault.TRUNCATE_BODY, after=1000, count=1)
    sim.faults["apifycloud"].add(Fault.GZIP_BOMB, count=1)               # 256 MiB of zeros
    sim.faults["apifycloud"].add(Fault.MANY_RECORDINGS, match="/api/calls/<id>")
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import functools
import json
import math
import random
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.simulator.asgi import Receive, Send, pause, send_body


class Fault(enum.StrEnum):
    """What can go wrong, and its parameters (fields of ``Rule``)."""

    RATE_LIMIT = "rate_limit"  # 429 with Retry-After: `retry_after` (None: no header)
    SERVER_ERROR = "server_error"  # 500, 502, 503 in turn, or `status`; 503 has Retry-After
    SLOW = "slow"  # wait `delay` seconds, then answer normally
    HTML_ERROR = "html_error"  # an HTML error page, status `status` (default 200)
    TRUNCATED_JSON = "truncated_json"  # the real JSON reply, cut in half
    JSON_ARRAY = "json_array"  # valid JSON, wrong shape: the real reply inside a list
    TRUNCATE_BODY = "truncate_body"  # download: full Content-Length, cut after `after` bytes
    XML_ERROR_200 = "xml_error_200"  # download: 200 with an XML error body
    EXPIRE_MID_DOWNLOAD = "expire_mid_download"  # send `after` bytes, stall `stall` s, cut;
    # the link is dead (403) from then until the provider hands out a fresh one
    WRONG_CONTENT_TYPE = "wrong_content_type"  # download: the bytes, labelled `content_type`
    GZIP_BOMB = "gzip_bomb"  # a 200 whose gzip body inflates to `inflated` bytes of zeros
    MANY_RECORDINGS = "many_recordings"  # the real reply, its recordings list `listed` long
    DRIP = "drip"  # download: `after` bytes, then one byte every `delay` seconds
    # Hostile list pages (GET /api/calls, /api/v1/calls; see simulator/listing.py):
    MALFORMED_ITEMS = "malformed_items"  # every other item of the page loses its id or date
    FOREIGN_NEXT = "foreign_next"  # Ultravox: `next` points at another origin
    LOOPING_PAGES = "looping_pages"  # the next page is this page again, forever
    HUGE_PAGE = "huge_page"  # 10 000 made-up items in one page, whatever the page size


_EARLY = frozenset({Fault.RATE_LIMIT, Fault.SERVER_ERROR, Fault.SLOW, Fault.HTML_ERROR})
LIST_FAULTS = frozenset(
    {Fault.MALFORMED_ITEMS, Fault.FOREIGN_NEXT, Fault.LOOPING_PAGES, Fault.HUGE_PAGE})
API_FAULTS = _EARLY | {Fault.TRUNCATED_JSON, Fault.JSON_ARRAY, Fault.GZIP_BOMB,
                       Fault.MANY_RECORDINGS} | LIST_FAULTS
DOWNLOAD_FAULTS = _EARLY | {
    Fault.TRUNCATE_BODY,
    Fault.XML_ERROR_200,
    Fault.EXPIRE_MID_DOWNLOAD,
    Fault.WRONG_CONTENT_TYPE,
    Fault.DRIP,
}
_SERVER_ERRORS = (500, 502, 503)

HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>"
    b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n"
)

# (status, message) -> (body, content type): each target's own error format
ErrorBody = Callable[[int, str], tuple[bytes, bytes]]


@dataclass(kw_only=True)
class Rule:
    """One fault and when it applies; ``hits`` counts the requests it has hit so far."""

    kind: Fault
    count: int | None = None  # at most this many hits; None: no limit
    probability: float = 1.0
    start: float | None = None  # active window on the world's clock
    end: float | None = None
    match: str | None = None  # only requests whose path contains this
    status: int | None = None
    retry_after: float | None = 1.0
    delay: float = 1.0
    after: int | None = None  # bytes sent before a cut; None: half the body
    stall: float = 5.0
    content_type: str = "text/html; charset=utf-8"
    inflated: int = 256 * 1024 * 1024  # gzip_bomb: decoded size
    listed: int = 15_000  # many_recordings: how many recordings the reply lists
    hits: int = 0

    def applies(self, path: str, now: float) -> bool:
        """Everything but the probability draw."""
        if self.count is not None and self.hits >= self.count:
            return False
        if (self.start is not None and now < self.start) or (
            self.end is not None and now >= self.end
        ):
            return False
        if self.kind in LIST_FAULTS and not path.rstrip("/").endswith("/calls"):
            return False  # a list fault waits for a list request, whatever else comes first
        return self.match is None or self.match in path

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Faults:
    """The mutable fault rules of one target."""

    def __init__(self, allowed: frozenset[Fault] = API_FAULTS, *, seed: int = 0) -> None:
        self.allowed = allowed
        self.rules: list[Rule] = []
        self.hits: collections.Counter[Fault] = collections.Counter()
        self._rng = random.Random(seed)

    def add(self, kind: Fault | str, **params: Any) -> Rule:
        """Append a rule; ``params`` are ``Rule`` fields. ValueError for a foreign kind."""
        fault = Fault(kind)
        if fault not in self.allowed:
            raise ValueError(f"{fault.value} does not apply to this target")
        rule = Rule(kind=fault, **params)
        self.rules.append(rule)
        return rule

    def add_json(self, data: Mapping[str, Any]) -> Rule:
        """``add`` from a JSON object; ValueError (not TypeError) for unknown fields."""
        names = {f.name for f in dataclasses.fields(Rule)} - {"kind", "hits"}
        unknown = set(data) - names - {"kind"}
        if unknown or "kind" not in data:
            raise ValueError(f"a rule needs 'kind' and only {sorted(names)}; got {sorted(data)}")
        params = {k: v for k, v in data.items() if k != "kind"}
        return self.add(data["kind"], **params)

    def clear(self) -> None:
        """Remove every rule (hit counts stay, as a record of what happened)."""
        self.rules.clear()

    def reseed(self, seed: int) -> None:
        """Restart the probability draws: the same requests will meet the same faults."""
        self._rng.seed(seed)

    def pick(self, path: str, now: float) -> Rule | None:
        """The fault of this request, counted as a hit; None when it is served normally."""
        for rule in self.rules:
            if not rule.applies(path, now):
                continue
            if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                continue
            rule.hits += 1
            self.hits[rule.kind] += 1
            return rule
        return None


def _retry_after(seconds: float | None) -> list[tuple[bytes, bytes]]:
    if seconds is None:
        return []
    return [(b"retry-after", str(max(0, math.ceil(seconds))).encode())]


async def apply_early(rule: Rule, receive: Receive, send: Send, error_body: ErrorBody) -> bool:
    """Act out a fault that does not need the real reply; True when the request is done."""
    if rule.kind is Fault.SLOW:
        return not await pause(receive, rule.delay)
    if rule.kind is Fault.RATE_LIMIT:
        body, ctype = error_body(429, "Too many requests")
        await send_body(send, 429, body, ctype, _retry_after(rule.retry_after))
        return True
    if rule.kind is Fault.SERVER_ERROR:
        status = rule.status or _SERVER_ERRORS[(rule.hits - 1) % len(_SERVER_ERRORS)]
        body, ctype = error_body(status, "Service temporarily unavailable")
        headers = _retry_after(rule.retry_after) if status == 503 else []
        await send_body(send, status, body, ctype, headers)
        return True
    if rule.kind is Fault.HTML_ERROR:
        await send_body(send, rule.status or 200, HTML_PAGE, b"text/html; charset=utf-8")
        return True
    if rule.kind is Fault.GZIP_BOMB:
        await send_body(send, rule.status or 200, gzip_bomb(rule.inflated),
                        b"application/json", [(b"content-encoding", b"gzip")])
        return True
    return False


@functools.lru_cache(maxsize=4)
def gzip_bomb(inflated: int) -> bytes:
    """``inflated`` zero bytes gzipped (about 1/1000 of that), built without holding them."""
    zobj = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(1024 * 1024)
    parts = [zobj.compress(block[: min(len(block), inflated - done)])
             for done in range(0, inflated, len(block))]
    return b"".join([*parts, zobj.flush()])


def mangle_json(rule: Rule | None, body: bytes) -> bytes:
    """Apply a JSON-shape fault to a reply body that is already encoded."""
    if rule is None:
        return body
    if rule.kind is Fault.TRUNCATED_JSON:
        return body[: len(body) // 2]
    if rule.kind is Fault.JSON_ARRAY:
        return b"[" + body + b"]"
    if rule.kind is Fault.MANY_RECORDINGS:
        return _many_recordings(body, rule.listed)
    return body


def _many_recordings(body: bytes, listed: int) -> bytes:
    """apifycloud's ``data.recordings`` made ``listed`` entries long (others: unchanged)."""
    reply = json.loads(body)
    data = reply.get("data") if isinstance(reply, dict) else None
    if not isinstance(data, dict):
        return body
    data["recordings"] = [{"id": f"flood-{i}", "status": "available",
                           "url": f"https://flood.invalid/{i}"} for i in range(listed)]
    return json.dumps(reply, separators=(",", ":")).encode()
