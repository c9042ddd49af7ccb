"""Fixtures: a real SQLite store in tmp_path, the API served by uvicorn on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.api.support import AUTH, TestRuntime, make_config, serving
from worker.api.server import ApiServer
from worker.store.sqlite import SQLiteStore


@pytest.fixture
def runtime(tmp_path: Path, store: SQLiteStore) -> TestRuntime:
    return TestRuntime(config=make_config(tmp_path), store=store)


@pytest.fixture
async def server(runtime: TestRuntime) -> AsyncIterator[ApiServer]:
    """The API on 127.0.0.1 and a free port, inside this test's task group."""
    async with serving(runtime, "127.0.0.1:0") as api:
        yield api


@pytest.fixture
async def client(server: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client for the running API that sends the right bearer token."""
    async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=10) as http:
        yield http


@pytest.fixture
async def anonymous(server: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client without credentials."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        yield http
