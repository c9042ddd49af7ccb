"""Shared fixtures: anyio on asyncio (the backend uvicorn and aiosqlite run on)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Every test starts from structlog's defaults: a command an earlier test ran through
    ``cli.main`` pointed logging at that test's captured stderr, which is closed by now."""
    yield
    structlog.reset_defaults()
