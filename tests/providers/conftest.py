"""Shared fixtures: anyio on asyncio, and stamina retrying without sleeping."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stamina


@pytest.fixture
def anyio_backend() -> str:
    """Adapters run on asyncio in the daemon; test them there."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_retry_sleep() -> Iterator[None]:
    """Retries happen (up to the adapters' own attempt count) but never sleep."""
    with stamina.set_testing(True, attempts=3, cap=True):
        yield
