"""POST /v1/calls and GET /v1/calls/{provider}/{call_id}, and bearer auth, over real HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.api.support import ENVOY_ID, UV_ID, TestRuntime
from worker.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


async def post(client: httpx.AsyncClient, body: Any) -> httpx.Response:
    """POST ``body`` as ASCII JSON: even a lone surrogate travels, escaped, as clients send it."""
    return await client.post("/v1/calls", content=json.dumps(body),
                             headers={"Content-Type": "application/json"})


async def test_missing_token_is_401_with_a_bearer_challenge(
        anonymous: httpx.AsyncClient) -> None:
    """Without Authorization the API answers 401 JSON and says Bearer is expected."""
    reply = await anonymous.post("/v1/calls", json={"provider": "ultravox", "call_id": UV_ID})
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization" in reply.json()["error"]


@pytest.mark.parametrize("header", ["Bearer wrong-token", "Basic dXNlcjpwYXNz", "Bearer",
                                    "test-api-token-5f1e"])
async def test_wrong_token_or_scheme_is_401(anonymous: httpx.AsyncClient, header: str) -> None:
    """A wrong token, another scheme or a bare token are all refused with 401."""
    reply = await anonymous.get(f"/v1/calls/ultravox/{UV_ID}",
                                headers={"Authorization": header})
    assert reply.status_code == 401
    assert "www-authenticate" in reply.headers
    assert set(reply.json()) == {"error"}


async def test_every_route_but_healthz_and_the_ultravox_webhook_needs_the_token(
        anonymous: httpx.AsyncClient) -> None:
    """/metrics and /openapi.json are protected; /healthz is not."""
    assert (await anonymous.get("/metrics")).status_code == 401
    assert (await anonymous.get("/openapi.json")).status_code == 401
    assert (await anonymous.get("/healthz")).status_code == 200


async def test_right_token_lets_the_request_through(client: httpx.AsyncClient) -> None:
    """The configured token, with the scheme in any case, is accepted."""
    reply = await client.get(f"/v1/calls/ultravox/{UV_ID}",
                             headers={"Authorization": "bearer test-api-token-5f1e"})
    assert reply.status_code == 404  # past auth: the call is simply not tracked


async def test_new_call_is_tracked_with_201_and_the_scheduler_is_woken(
        client: httpx.AsyncClient, runtime: TestRuntime, store: SQLiteStore) -> None:
    """A new call answers 201 with its state, is in the database, and its lane is woken."""
    reply = await post(client, {"provider": "ultravox", "call_id": UV_ID,
                                "metadata": {"ticket": 42}, "webhook": "https://h.example/x"})
    assert reply.status_code == 201
    body = reply.json()
    assert body["tracked"] is True
    assert (body["provider"], body["call_id"], body["state"]) == ("ultravox", UV_ID, "pending")
    assert body["metadata"] == {"ticket": 42}
    call = await store.get_call("ultravox", UV_ID)
    assert call is not None and call.webhook_url == "https://h.example/x"
    assert runtime.scheduler.woken == ["ultravox"]


async def test_tracking_twice_answers_200_and_changes_nothing(
        client: httpx.AsyncClient, runtime: TestRuntime, store: SQLiteStore) -> None:
    """The second POST of a call is 200 tracked=false; one row, first metadata kept."""
    first = await post(client, {"provider": "envoy", "call_id": ENVOY_ID, "metadata": {"a": 1}})
    second = await post(client, {"provider": "envoy", "call_id": ENVOY_ID, "metadata": {"a": 2}})
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["tracked"] is False
    assert second.json()["metadata"] == {"a": 1}
    counts = await store.counts()
    assert sum(counts.calls_by_state.values()) == 1
    assert runtime.scheduler.woken == ["envoy"]  # nothing new the second time


@pytest.mark.parametrize("raw", [b"{", b"not json", b"", b"\xff\xfe{}", b'{"provider": NaN}',
                                 b"[" * 100_00 + b"]" * 100_00, b"1" * 5000])
async def test_bad_json_is_400(client: httpx.AsyncClient, raw: bytes) -> None:
    """Unparseable, non-UTF-8, NaN, absurdly nested or absurdly long JSON is a 400."""
    reply = await client.post("/v1/calls", content=raw,
                              headers={"Content-Type": "application/json"})
    assert reply.status_code == 400
    assert reply.json()["error"].startswith("the body is not valid JSON")


@pytest.mark.parametrize(("body", "message"), [
    ([], "must be a JSON object"),
    ({"call_id": UV_ID}, "'provider' is required"),
    ({"provider": "ultravox"}, "'call_id' is required"),
    ({"provider": 3, "call_id": UV_ID}, "'provider' must be a string, got a number"),
    ({"provider": "ultravox", "call_id": [UV_ID]}, "'call_id' must be a string, got an array"),
    ({"provider": "ultravox", "call_id": UV_ID, "metadata": "x"}, "'metadata' must be an object"),
    ({"provider": "ultravox", "call_id": UV_ID, "metadata": [1]}, "'metadata' must be an object"),
    ({"provider": "ultravox", "call_id": UV_ID, "webhook": True}, "got a boolean"),
    ({"provider": "ultravox", "call_id": UV_ID, "metdata": {}}, "unknown field 'metdata'"),
])
async def test_wrong_shapes_and_types_are_400_with_a_clear_message(
        client: httpx.AsyncClient, body: Any, message: str) -> None:
    """Each shape mistake is named in the one-line error."""
    reply = await post(client, body)
    assert reply.status_code == 400
    assert message in reply.json()["error"]


@pytest.mark.parametrize(("provider", "message"), [
    ("zoom", "unknown provider 'zoom' (not a provider"),
    ("apifycloud", "unknown provider 'apifycloud' (not configured"),
])
async def test_unknown_or_unconfigured_provider_is_400(client: httpx.AsyncClient,
                                                       provider: str, message: str) -> None:
    """Same words as `callwatch track` for a provider that does not exist or is not set up."""
    reply = await post(client, {"provider": provider, "call_id": UV_ID})
    assert reply.status_code == 400
    assert reply.json()["error"].startswith(message)


@pytest.mark.parametrize("call_id", ["../../etc/passwd", "6f1c2a9e\n5b8d", "abc\x00def",
                                     "6f1c2a9e-5b8d-4f3e-9a0b-2c4d6e8f0a1b/..", "", " ",
                                     "x" * 5000])
async def test_malformed_call_ids_are_400_and_nothing_is_stored(
        client: httpx.AsyncClient, store: SQLiteStore, call_id: str) -> None:
    """Path tricks, control characters and odd lengths never reach the database."""
    reply = await post(client, {"provider": "ultravox", "call_id": call_id})
    assert reply.status_code == 400
    assert reply.json()["error"].startswith("malformed ultravox call id")
    assert len(reply.json()["error"]) < 300
    assert (await store.counts()).calls_by_state == {}


def _deep(levels: int) -> object:
    """A value nested ``levels`` lists deep."""
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(("extra", "message"), [
    ({"metadata": {"blob": "x" * 17000}}, "metadata is larger than 16 KiB"),
    ({"metadata": {"text": "\ud800"}}, "metadata holds a lone surrogate"),
    ({"webhook": "ftp://h.example/x"}, "webhook must be an http(s) URL"),
    ({"webhook": "https://h.example/a b"}, "webhook must not contain spaces"),
    ({"webhook": "http://2130706433/x"}, "webhook host '2130706433' is a loopback address"),
    ({"webhook": "http://[fd00:ec2::254]/"}, "webhook host 'fd00:ec2::254' is a private"),
    ({"webhook": "http://u:pw@h.example/"}, "webhook must not carry user:password@"),
    ({"metadata": {"deep": _deep(32)}}, "metadata is nested deeper than 32"),
])
async def test_bad_metadata_or_webhook_is_400_in_the_fields_words(
        client: httpx.AsyncClient, extra: dict[str, Any], message: str) -> None:
    """The shared track rules apply, and their messages name the JSON field, not --option."""
    reply = await post(client, {"provider": "ultravox", "call_id": UV_ID, **extra})
    assert reply.status_code == 400
    assert reply.json()["error"].startswith(message)


async def test_body_over_64_kib_is_413(client: httpx.AsyncClient, store: SQLiteStore) -> None:
    """A body past the cap is refused before it is parsed."""
    reply = await client.post("/v1/calls", content=b"{" + b" " * 70_000 + b"}",
                              headers={"Content-Type": "application/json"})
    assert reply.status_code == 413
    assert "larger than" in reply.json()["error"]
    assert (await store.counts()).calls_by_state == {}


async def test_chunked_body_over_the_cap_is_413(client: httpx.AsyncClient) -> None:
    """Without a Content-Length the body is counted as it arrives."""
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 8192

    reply = await client.post("/v1/calls", content=chunks())
    assert reply.status_code == 413


async def test_get_of_a_tracked_call_shows_state_recordings_and_events(
        client: httpx.AsyncClient) -> None:
    """GET answers what `status --json` shows for one call, events included."""
    await post(client, {"provider": "ultravox", "call_id": UV_ID, "metadata": {"k": "v"}})
    reply = await client.get(f"/v1/calls/ultravox/{UV_ID}")
    assert reply.status_code == 200
    body = reply.json()
    assert body["call_id"] == UV_ID and body["state"] == "pending"
    assert body["recordings"] == [] and body["events"] == []
    assert body["metadata"] == {"k": "v"}
    assert body["next_poll_at"].endswith("Z")


async def test_get_of_an_untracked_call_is_404_json(client: httpx.AsyncClient) -> None:
    """An untracked call is a 404 with a JSON error naming it."""
    reply = await client.get(f"/v1/calls/envoy/{ENVOY_ID}")
    assert reply.status_code == 404
    assert ENVOY_ID in reply.json()["error"]


async def test_an_encoded_slash_stays_inside_the_call_id(client: httpx.AsyncClient) -> None:
    """`..%2F..%2Fetc%2Fpasswd` is one (untracked) call id, not a path that changes routes."""
    reply = await client.get("/v1/calls/ultravox/..%2F..%2Fetc%2Fpasswd")
    assert reply.status_code == 404
    assert "'../../etc/passwd' is not tracked" in reply.json()["error"]


async def test_a_reloaded_config_changes_the_token_at_once(
        anonymous: httpx.AsyncClient, runtime: TestRuntime) -> None:
    """After SIGHUP swaps runtime.config, the old token is refused and the new one works."""
    from dataclasses import replace

    from worker.secrets import Secret

    runtime.config = replace(runtime.config,
                             api=replace(runtime.config.api, token=Secret("rotated-token")))
    path = f"/v1/calls/ultravox/{UV_ID}"
    old = await anonymous.get(path, headers={"Authorization": "Bearer test-api-token-5f1e"})
    new = await anonymous.get(path, headers={"Authorization": "Bearer rotated-token"})
    assert (old.status_code, new.status_code) == (401, 404)
