"""A scripted HTTP provider on ``httpx.MockTransport``, and the configs and ids tests share."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx

from worker.config import DEFAULT_BASE_URLS, ProviderConfig, TrackingConfig
from worker.providers import build_provider
from worker.providers.base import Provider
from worker.secrets import Secret

FIXTURES = Path(__file__).parent.parent / "fixtures" / "providers"
API_KEY = "sk-live-NEVER-LOG-ME-0123456789abcdef"
WIDGET_KEY = "wk-NEVER-LOG-ME-fedcba9876543210"
UUID_ID = "3f2b8a1e-5c4d-4e6f-8a9b-0c1d2e3f4a5b"
APIFY_ID = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"
ENVOY_ID = "call_7c1e2d3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
CALL_IDS = {"ultravox": UUID_ID, "envoy": ENVOY_ID, "apifycloud": APIFY_ID}
CALL_PATHS = {
    "ultravox": f"/api/calls/{UUID_ID}",
    "envoy": f"/api/v1/calls/{ENVOY_ID}",
    "apifycloud": f"/api/calls/{APIFY_ID}",
}

Answer = httpx.Response | Callable[[httpx.Request], httpx.Response] | Exception


def load(name: str) -> dict[str, Any]:
    """A documented payload from tests/fixtures/providers."""
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text("utf-8"))
    return data


def make_config(name: str, **changes: Any) -> ProviderConfig:
    """A fully configured provider (keys, org and app ids) on its documented base URL."""
    values: dict[str, Any] = {
        "name": name,
        "base_url": DEFAULT_BASE_URLS[name],
        "tracking": TrackingConfig(),
        "api_key": Secret(API_KEY) if name != "apifycloud" else None,
        "organization_id": "org_42" if name == "envoy" else None,
        "app_id": "app_7" if name == "apifycloud" else None,
        "widget_key": Secret(WIDGET_KEY) if name == "apifycloud" else None,
    }
    values.update(changes)
    return ProviderConfig(**values)


class Routes:
    """Answers per path; a list answers in turn and then keeps repeating its last entry."""

    def __init__(self, routes: Mapping[str, Answer | list[Answer]]) -> None:
        self._routes = {path: v if isinstance(v, list) else [v] for path, v in routes.items()}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answers = self._routes.get(request.url.path)
        if answers is None:
            raise AssertionError(f"unexpected request to {request.url.path}")
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            # A Response is single-use: hand out a fresh copy each time.
            return httpx.Response(answer.status_code, headers=answer.headers,
                                  content=answer.content)
        return answer(request)

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


@asynccontextmanager
async def provider(
    name: str, routes: Routes | Mapping[str, Answer | list[Answer]], **config: Any
) -> AsyncIterator[Provider]:
    """The named adapter, built the daemon's way, talking to ``routes``."""
    handler = routes if isinstance(routes, Routes) else Routes(routes)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        yield build_provider(make_config(name, **config), client)


class EndlessBody(httpx.AsyncByteStream):
    """A body that never ends, counting what was actually pulled from it."""

    def __init__(self, chunk: bytes = b"x" * 65536, delay: float = 0.0,
                 limit: int | None = None) -> None:
        self.chunk = chunk
        self.delay = delay
        self.limit = limit
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.limit is None or self.sent < self.limit:
            if self.delay:
                await anyio.sleep(self.delay)
            self.sent += len(self.chunk)
            yield self.chunk

    async def aclose(self) -> None:
        """Nothing to release."""
