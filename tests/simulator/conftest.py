"""Fixtures: a world on a fake clock, the simulator serving it, and an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from worker.simulator import Simulator, World, run_simulator

START = 1_800_000_000.0  # 2027-01-15: far from any real clock, so nothing passes by accident


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def world(clock: FakeClock) -> World:
    return World(clock=clock)


@pytest.fixture
async def sim(world: World) -> AsyncIterator[Simulator]:
    async with run_simulator(world) as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # Plain HTTP on loopback: skipping the TLS context saves ~0.1 s of CA loading per test.
    async with httpx.AsyncClient(timeout=10, verify=False) as http:  # noqa: S501
        yield http


def ultravox_auth(sim: Simulator) -> dict[str, str]:
    return {"X-API-Key": sim.api_keys["ultravox"]}


def envoy_auth(sim: Simulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {sim.api_keys['envoy']}"}
