"""Shared fixtures: anyio on asyncio (the backend uvicorn and aiosqlite run on)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
