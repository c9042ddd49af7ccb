"""Whatever JSON a provider sends, an adapter answers with a value and never raises."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from tests.providers.support import CALL_IDS, CALL_PATHS, load, make_config, provider
from worker.model import DownloadSource, NotFound, PollFailed, Snapshot
from worker.providers import build_provider

pytestmark = pytest.mark.anyio

SCALARS = (st.none() | st.booleans() | st.integers() | st.text(max_size=30)
           | st.floats(allow_nan=False, allow_infinity=False))
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def shaped_like(example: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The documented keys, each holding either its documented value or anything at all."""
    return st.fixed_dictionaries(
        {}, optional={key: st.just(value) | JSON for key, value in example.items()})


def ok(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=body)


RECORDING_ENTRY = shaped_like(load("apifycloud_call_ended")["data"]["recordings"][0])
APIFY_DATA = st.builds(
    lambda data, recs: {**data, "recordings": recs},
    shaped_like(load("apifycloud_call_ended")["data"]),
    st.lists(RECORDING_ENTRY | JSON, max_size=3),
)
ULTRAVOX_RECORDING = st.sampled_from([
    httpx.Response(404),
    httpx.Response(302, headers={"Location": "https://storage.example/r?X-Goog-Expires=300"}),
    httpx.Response(302, headers={"Location": "::not a url::"}),
    httpx.Response(200, headers={"Content-Type": "audio/wav", "Content-Length": "-1"}),
])
# (provider, {path: answer}) cases: the call body, plus /recording where the API has one.
CASES = st.one_of(
    st.builds(lambda call, rec: ("ultravox", {"call": ok(call), "recording": rec}),
              shaped_like(load("ultravox_call_ended")), ULTRAVOX_RECORDING),
    st.builds(lambda call, rec: ("envoy", {"call": ok(call), "recording": ok(rec)}),
              shaped_like(load("envoy_call_completed")), shaped_like(load("envoy_recording"))),
    st.builds(lambda okay, data: ("apifycloud", {"call": ok({"ok": okay, "data": data})}),
              st.just(True) | JSON, APIFY_DATA | JSON),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=CASES)
async def test_adapters_never_raise(case: tuple[str, dict[str, httpx.Response]]) -> None:
    """Documented shapes with any field replaced by any JSON give a PollResult, not an error."""
    name, answers = case
    path = CALL_PATHS[name]
    routes = {path: answers["call"], path + "/recording": answers.get("recording", ok({}))}
    with capture_logs():  # keep hundreds of warnings off the terminal
        async with provider(name, routes) as adapter:
            result = await adapter.fetch_call(CALL_IDS[name])
            rec_id = "rec_1" if name == "apifycloud" else CALL_IDS[name]
            source = await adapter.recording_source(CALL_IDS[name], rec_id)
    assert isinstance(result, Snapshot | NotFound | PollFailed)
    assert isinstance(source, DownloadSource | NotFound | PollFailed)


def _wire(status: int, body: bytes, coding: str | None, ctype: str | None) -> httpx.Response:
    """A reply as it comes off a socket: streamed, so the adapters decode it themselves."""
    headers = {}
    if coding is not None:
        headers["Content-Encoding"] = coding
        if coding == "gzip":
            body = gzip.compress(body)
        elif coding == "deflate":
            body = zlib.compress(body)
    if ctype is not None:
        headers["Content-Type"] = ctype
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))


JSONISH_BYTES = st.one_of(
    st.binary(max_size=200),
    JSON.map(lambda value: json.dumps(value).encode()),
    st.builds(lambda okay, data: json.dumps({"ok": okay, "data": data}).encode(),
              st.just(True) | JSON, APIFY_DATA | JSON),
)
Wire = tuple[int, bytes, str | None, str | None]
WIRE: st.SearchStrategy[Wire] = st.tuples(
    st.sampled_from([200, 200, 200, 201, 204, 301, 302, 400, 401, 404, 410, 429, 500, 503]),
    JSONISH_BYTES,
    st.sampled_from([None, "gzip", "deflate", "br", "identity", "gzip, deflate", ""]),
    st.sampled_from([None, "application/json", "text/html", "audio/wav"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(CALL_IDS)), call=WIRE, recording=WIRE)
async def test_adapters_never_raise_on_wire_replies(
    name: str, call: Wire, recording: Wire
) -> None:
    """Any status, coding and bytes (compressed or not) give a value, never an exception."""
    path = CALL_PATHS[name]
    answers = {path: call, path + "/recording": recording}

    def handler(request: httpx.Request) -> httpx.Response:
        return _wire(*answers[request.url.path])  # a fresh stream for every request

    with capture_logs():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            adapter = build_provider(make_config(name), client)
            result = await adapter.fetch_call(CALL_IDS[name])
            rec_id = "rec_1" if name == "apifycloud" else CALL_IDS[name]
            source = await adapter.recording_source(CALL_IDS[name], rec_id)
    assert isinstance(result, Snapshot | NotFound | PollFailed)
    assert isinstance(source, DownloadSource | NotFound | PollFailed)
