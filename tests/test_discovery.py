"""Discovery against the simulator over loopback and a real SQLite file: sweeps, marks, leases,
and every hostile page (malformed items, foreign next, loops, huge pages, 429/5xx)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import anyio
import httpx
import pytest
import stamina

from tests.providers.support import make_config
from worker.config_discovery import DiscoveryConfig
from worker.discovery import Discovery, DiscoveryLane, recorder
from worker.discovery_plan import OVERLAP, Window
from worker.discovery_sweep import BATCH_PAGES, sweep
from worker.model import PollFailed
from worker.providers.listing import ListedCall, Page, make_lister
from worker.ratelimit import TokenBucket
from worker.secrets import Secret
from worker.simulator import Simulator, World, run_simulator
from worker.simulator.faults import Fault
from worker.store.base import Store
from worker.store.factory import open_store

pytestmark = pytest.mark.anyio
START = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_retry_sleep() -> Iterator[None]:
    with stamina.set_testing(True, attempts=3, cap=True):
        yield


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sim(clock: Clock) -> AsyncIterator[Simulator]:
    async with run_simulator(World(clock=clock)) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(tmp_path / "callwatch.db", owner="host:1:aa")
    yield opened
    await opened.close()


def discovery(sim: Simulator, http: httpx.AsyncClient, store: Store, clock: Clock,
              provider: str, *, since: float | None = None, max_pages: int = 1000,
              bucket: TokenBucket | None = None) -> Discovery:
    config = make_config(provider, base_url=sim.base_urls[provider],
                         api_key=Secret(sim.api_keys[provider]))
    lane = DiscoveryLane(lister=make_lister(config, http), bucket=bucket or TokenBucket(1000),
                         config=DiscoveryConfig(enabled=True, since=since))
    return Discovery(store, {provider: lane}, clock=clock, max_pages=max_pages)


async def tracked(store: Store, provider: str) -> set[str]:
    calls = await store.list_calls(limit=100_000, include_terminal=True)
    return {c.call_id for c in calls if c.provider == provider}


@pytest.mark.parametrize("provider", ["ultravox", "envoy"])
async def test_calls_since_the_floor_are_tracked_with_empty_metadata(
    provider: str, sim: Simulator, http: httpx.AsyncClient, store: Store, clock: Clock,
) -> None:
    """Calls created at or after discover_since are tracked ({} metadata); older ones never."""
    old = [sim.world.add_call(provider, created_at=START - 500 - i).call_id for i in range(5)]
    new = [sim.world.add_call(provider, created_at=START - 300 + i).call_id for i in range(250)]
    found = discovery(sim, http, store, clock, provider, since=START - 300)
    report = await found.sweep_once(provider)
    assert report is not None and report.complete
    assert (report.found, report.new, report.pages) == (250, 250, 3)
    assert await tracked(store, provider) == set(new)
    assert not set(old) & await tracked(store, provider)
    call = await store.get_call(provider, new[0])
    assert call is not None and call.metadata == {}
    clock.now += 60
    again = await found.sweep_once(provider)
    assert again is not None and again.new == 0


async def test_default_floor_is_the_first_run_and_late_listed_calls_are_caught(
    sim: Simulator, http: httpx.AsyncClient, store: Store, clock: Clock,
) -> None:
    """Without discover_since nothing older than the first sweep is tracked; a call created
    before the mark but listed only afterwards (within the overlap) is still found."""
    before = sim.world.add_call("ultravox", created_at=START - 10).call_id
    found = discovery(sim, http, store, clock, "ultravox")
    first = await found.sweep_once("ultravox")
    assert first is not None and first.new == 0
    clock.now += 60
    late = sim.world.add_call("ultravox", created_at=START + 30).call_id  # listed after mark
    fresh = sim.world.add_call("ultravox", created_at=START + 59).call_id
    second = await found.sweep_once("ultravox")
    assert second is not None and second.new == 2
    assert await tracked(store, "ultravox") == {late, fresh}
    assert before not in await tracked(store, "ultravox")
    state = await store.discovery_state("ultravox")
    assert state is not None and state.mark == START + 60
    assert START + 60 - OVERLAP < START + 30  # the overlap is what caught `late`


async def test_track_and_discovery_do_not_disturb_each_other(
    sim: Simulator, http: httpx.AsyncClient, store: Store, clock: Clock,
) -> None:
    """A call already tracked (with metadata) is counted as already tracked and kept as is."""
    from worker.store.base import NewCall

    call = sim.world.add_call("envoy", created_at=START).call_id
    await store.track(NewCall(provider="envoy", call_id=call, metadata={"ticket": 7}), START)
    report = await discovery(sim, http, store, clock, "envoy", since=START).sweep_once("envoy")
    assert report is not None and (report.found, report.new, report.already_tracked) == (1, 0, 1)
    kept = await store.get_call("envoy", call)
    assert kept is not None and kept.metadata == {"ticket": 7}


async def test_a_second_worker_does_not_sweep_while_the_first_holds_the_lease(
    sim: Simulator, http: httpx.AsyncClient, store: Store, clock: Clock, tmp_path: Path,
) -> None:
    """With the lease held elsewhere, sweep_once does nothing and says so (None)."""
    other = await open_store(tmp_path / "callwatch.db", owner="host:2:bb")
    try:
        assert await other.claim_discovery("ultravox", START) is not None
        assert await discovery(sim, http, store, clock, "ultravox").sweep_once("ultravox") is None
        await other.release_discovery("ultravox")
        assert await discovery(sim, http, store, clock, "ultravox").sweep_once(
            "ultravox") is not None
    finally:
        await other.close()


async def test_a_restart_mid_sweep_neither_misses_nor_duplicates(
    sim: Simulator, http: httpx.AsyncClient, store: Store, clock: Clock, tmp_path: Path,
) -> None:
    """A sweep cut after 2 pages keeps its progress; a new process tracks exactly the rest."""
    ids = [sim.world.add_call("ultravox", created_at=START - 400 + i).call_id for i in range(350)]
    cut = await discovery(sim, http, store, clock, "ultravox", since=START - 1000,
                          max_pages=2).sweep_once("ultravox")
    assert cut is not None and not cut.complete and cut.new == 200
    state = await store.discovery_state("ultravox")
    assert state is not None and state.mark == START - 400 + 199  # the newest call read
    restarted = await open_store(tmp_path / "callwatch.db", owner="host:3:cc")
    try:
        clock.now += 60
        rest = await discovery(sim, http, restarted, clock, "ultravox",
                               since=START - 1000).sweep_once("ultravox")
        assert rest is not None and rest.complete and rest.new == 150
        assert await tracked(restarted, "ultravox") == set(ids)
        assert len(await restarted.list_calls(limit=10_000, include_terminal=True)) == 350
    finally:
        await restarted.close()


async def test_malformed_items_are_skipped_and_the_rest_tracked(
    sim: Simulator, http: httpx.AsyncClient, store: Store, clock: Clock,
) -> None:
    """Every other item of a mangled page is skipped; the good ones and other pages go on."""
    ids = [sim.world.add_call("ultravox", created_at=START + i).call_id for i in range(120)]
    clock.now = START + 1000
    sim.faults["ultravox"].add(Fault.MALFORMED_ITEMS, count=1)
    report = await discovery(sim, http, store, clock, "ultravox", since=START).sweep_once(
        "ultravox")
    assert report is not None and report.complete
    assert (report.skipped, report.new) == (50, 70)
    assert await tracked(store, "ultravox") == set(ids[0:100:2]) | set(ids[100:])


async def test_a_foreign_next_is_refused_and_the_mark_stays(
    sim: Simulator, http: httpx.AsyncClient, store: Store, clock: Clock,
) -> None:
    """The first page is tracked; the foreign page is never asked; the sweep is incomplete."""
    for i in range(150):
        sim.world.add_call("ultravox", created_at=START - 200 + i)
    sim.faults["ultravox"].add(Fault.FOREIGN_NEXT, count=1)
    report = await discovery(sim, http, store, clock, "ultravox", since=START - 300).sweep_once(
        "ultravox")
    assert report is not None
    assert (report.complete, report.stopped, report.pages, report.new) == (
        False, "foreign_next", 1, 100)
    state = await store.discovery_state("ultravox")
    assert state is not None and state.mark == START - 200 + 99  # only what was read


@pytest.mark.parametrize("provider", ["ultravox", "envoy"])
async def test_looping_pages_are_bounded(
    provider: str, sim: Simulator, http: httpx.AsyncClient, store: Store, clock: Clock,
) -> None:
    """A next that returns to a seen page (Ultravox) or never ends (Envoy) stops the sweep."""
    for i in range(30):
        sim.world.add_call(provider, created_at=START + i)
    clock.now = START + 1000
    sim.faults[provider].add(Fault.LOOPING_PAGES)
    report = await discovery(sim, http, store, clock, provider, since=START,
                             max_pages=7).sweep_once(provider)
    assert report is not None and not report.complete
    assert report.stopped == ("loop" if provider == "ultravox" else "page_limit")
    assert report.pages <= 7 and report.new == 30


@pytest.mark.parametrize("fault", [Fault.HUGE_PAGE, Fault.RATE_LIMIT, Fault.SERVER_ERROR])
async def test_a_failed_page_is_asked_again_and_the_sweep_resumes(
    fault: Fault, sim: Simulator, http: httpx.AsyncClient, store: Store, clock: Clock,
) -> None:
    """A 10 000-item page (not read: bounded memory), a 429 or a 5xx burst on page 2: the
    sweep asks that page again and ends complete, with every call tracked once."""
    ids = [sim.world.add_call("envoy", created_at=START + i).call_id for i in range(250)]
    config = make_config("envoy", base_url=sim.base_urls["envoy"],
                         api_key=Secret(sim.api_keys["envoy"]))
    bucket = TokenBucket(1000)
    window = Window(since=START, until=START + 1000)
    # 3 hits: more than the adapter's own retries of a 5xx, so the sweep must ask again.
    params = {"count": 1} if fault is Fault.HUGE_PAGE else {"count": 3, "retry_after": 0}

    sim.faults["envoy"].add(Fault.SLOW, delay=0, count=1)  # page 1: served as it is
    sim.faults["envoy"].add(fault, **params)  # then page 2, asked until it is served
    report = await sweep(make_lister(config, http), bucket, window,
                         recorder(store, "envoy", clock))
    assert report.complete and report.retries >= 1 and report.pages == 3
    assert report.new == 250 and await tracked(store, "envoy") == set(ids)
    assert sim.faults["envoy"].hits[fault] == params["count"]


async def test_a_rate_limited_page_pauses_the_lanes_bucket(
    sim: Simulator, http: httpx.AsyncClient, store: Store, clock: Clock,
) -> None:
    """A 429 with Retry-After pauses the very bucket the polling lane draws from."""
    class Watched(TokenBucket):
        pauses: list[float] = []  # noqa: RUF012 - one test, one instance

        def pause(self, seconds: float) -> None:
            self.pauses.append(seconds)
            super().pause(seconds)

    sim.world.add_call("ultravox", created_at=START)
    bucket = Watched(1000)
    sim.faults["ultravox"].add(Fault.RATE_LIMIT, count=1, retry_after=1)
    found = discovery(sim, http, store, clock, "ultravox", since=START, bucket=bucket)
    report = await found.sweep_once("ultravox")
    assert report is not None and report.complete and report.retries == 1
    assert bucket.pauses == [1.0]
    assert sim.faults["ultravox"].hits[Fault.RATE_LIMIT] == 1


async def test_pages_waiting_for_a_slow_store_are_recorded_together_within_a_bound(
    sim: Simulator, http: httpx.AsyncClient, store: Store, clock: Clock,
) -> None:
    """While the store writes, the reader goes on, but at most ``BATCH_PAGES`` pages ahead
    (memory stays bounded); pages are tracked ``BATCH_PAGES`` at most in one ``record``,
    and the totals are exact."""
    ids = [sim.world.add_call("ultravox", created_at=START + i).call_id for i in range(5000)]
    config = make_config("ultravox", base_url=sim.base_urls["ultravox"],
                         api_key=Secret(sim.api_keys["ultravox"]))
    lister = make_lister(config, http)

    class Counting:
        name, ordered, fetched = lister.name, lister.ordered, 0

        def first_url(self, since: float | None, until: float | None) -> str:
            return lister.first_url(since, until)

        async def page(self, url: str) -> Page | PollFailed:
            self.fetched += 1
            return await lister.page(url)

    counting = Counting()
    inner = recorder(store, "ultravox", clock)
    batches: list[int] = []
    ahead: list[int] = []

    async def slow_record(calls: Sequence[ListedCall]) -> int:
        if not batches:  # the first batch: hold the writer until the reader stops reading
            read = -1
            with anyio.fail_after(60):
                while counting.fetched != read:
                    read = counting.fetched
                    await anyio.sleep(0.5)
            ahead.append(counting.fetched)
        batches.append(len(calls))
        return await inner(calls)

    report = await sweep(counting, TokenBucket(1000), Window(since=START, until=START + 9000),
                         slow_record)
    # Read: the batch being written, BATCH_PAGES in the stream, one the reader waits to send.
    assert ahead == [batches[0] // 100 + BATCH_PAGES + 1]
    assert batches[1] == BATCH_PAGES * 100 and max(batches) <= BATCH_PAGES * 100
    assert (report.complete, report.pages, report.found, report.new) == (True, 50, 5000, 5000)
    assert await tracked(store, "ultravox") == set(ids)
