"""Provider strings with terminal escape sequences are kept as data, byte for byte.

Escaping belongs to whatever prints them (``callwatch status`` escapes control characters);
an adapter that stripped or rewrote them would lose what the provider said and hide an attack
from the operator looking at the database.
"""

from __future__ import annotations

import httpx
import pytest
from structlog.testing import capture_logs

from tests.providers.support import CALL_IDS, CALL_PATHS, load, provider
from worker.model import Snapshot

pytestmark = pytest.mark.anyio

EVIL = "\x1b]0;owned\x07\x1b[2J\x1b[31mhangup\r\n\x9b"


async def _fetch(name: str, body: dict[str, object]) -> Snapshot:
    path = CALL_PATHS[name]
    routes = {path: httpx.Response(200, json=body), path + "/recording": httpx.Response(404)}
    with capture_logs():
        async with provider(name, routes) as adapter:
            result = await adapter.fetch_call(CALL_IDS[name])
    assert isinstance(result, Snapshot)
    return result


async def test_ultravox_end_reason_is_kept_verbatim() -> None:
    """An Ultravox endReason full of escape sequences reaches the snapshot unchanged."""
    result = await _fetch("ultravox", {**load("ultravox_call_ended"), "endReason": EVIL})
    assert result.end_reason == EVIL
    assert result.provider_status == f"ended:{EVIL}"


async def test_envoy_status_is_kept_verbatim() -> None:
    """An unknown Envoy status with escape sequences is kept as the provider status."""
    result = await _fetch("envoy", {**load("envoy_call_completed"), "status": EVIL})
    assert result.provider_status == EVIL


async def test_apifycloud_strings_are_kept_verbatim() -> None:
    """apifycloud's status and a recording's content type and id are kept unchanged."""
    body = load("apifycloud_call_ended")
    recording = {**body["data"]["recordings"][0], "id": EVIL, "contentType": EVIL}
    body["data"] = {**body["data"], "status": EVIL, "recordings": [recording]}
    result = await _fetch("apifycloud", body)
    assert result.provider_status == EVIL
    assert [(r.id, r.content_type) for r in result.recordings] == [(EVIL, EVIL)]
