"""GET /healthz and GET /metrics over real HTTP."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.support import ENVOY_ID, UV_ID, FakeArchiver, FakeRelay, TestRuntime
from worker.archive.archiver import ArchiverStats
from worker.looplag import LoopLagStats
from worker.store.base import NewCall, StoreHealth
from worker.store.errors import TransientStoreError
from worker.store.sqlite import SQLiteStore
from worker.store_errors import StoreErrors
from worker.webhooks.policy import Delivered, Retry

pytestmark = pytest.mark.anyio


async def test_healthz_is_200_while_the_loops_progress(anonymous: httpx.AsyncClient) -> None:
    """Fresh progress and a working database: 200 {"ok": true}, no token needed."""
    reply = await anonymous.get("/healthz")
    assert reply.status_code == 200
    body = reply.json()
    assert body["ok"] is True
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["scheduler"]["progress_age"] < 30


async def test_healthz_is_503_when_the_scheduler_is_stuck(anonymous: httpx.AsyncClient,
                                                          runtime: TestRuntime) -> None:
    """No scheduler progress for a minute: 503 with the reason."""
    runtime.scheduler.stats.last_progress = time.monotonic() - 60
    reply = await anonymous.get("/healthz")
    assert reply.status_code == 503
    assert reply.json()["ok"] is False
    assert "the scheduler made no progress for 60 s" in reply.json()["error"]


async def test_healthz_is_503_when_the_database_fails(anonymous: httpx.AsyncClient,
                                                      store: SQLiteStore,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A database that raises makes the probe fail, not 500."""

    async def broken(*_: object) -> None:
        raise TransientStoreError("disk I/O error")

    monkeypatch.setattr(store, "next_due_at", broken)
    reply = await anonymous.get("/healthz")
    assert reply.status_code == 503
    assert "the database does not answer" in reply.json()["error"]


async def test_healthz_is_503_when_the_database_hangs(anonymous: httpx.AsyncClient,
                                                     store: SQLiteStore,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A database that never answers: 503 after two seconds, not a hanging probe."""

    async def hangs() -> None:
        await anyio.sleep_forever()

    monkeypatch.setattr(store, "probe", hangs)
    reply = await anonymous.get("/healthz")
    assert reply.status_code == 503
    assert "the database did not answer within 2 s" in reply.json()["error"]


async def test_healthz_is_503_with_the_stores_own_finding(
        anonymous: httpx.AsyncClient, store: SQLiteStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the store's probe reports (a replaced file, say) is the reason given."""

    async def replaced() -> StoreHealth:
        return StoreHealth(ok=False, problem="the database file was replaced")

    monkeypatch.setattr(store, "probe", replaced)
    reply = await anonymous.get("/healthz")
    assert reply.status_code == 503
    assert reply.json()["error"] == "the database file was replaced"
    assert reply.json()["checks"]["database"] == "failing"


async def test_healthz_counts_a_stuck_relay(anonymous: httpx.AsyncClient,
                                            runtime: TestRuntime) -> None:
    """Every loop that reports progress is checked, the relay included."""

    runtime.relay = FakeRelay(last_progress=time.monotonic() - 45)
    reply = await anonymous.get("/healthz")
    assert reply.status_code == 503
    assert "the relay made no progress" in reply.json()["error"]


def families(text: str) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """Parsed with prometheus_client's own parser: family -> (sample, labels) -> value."""
    found: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for family in text_string_to_metric_families(text):
        found[family.name] = {(s.name, tuple(sorted(s.labels.items()))): s.value
                              for s in family.samples}
    return found


async def test_metrics_scrape_parses_and_holds_the_expected_values(
        client: httpx.AsyncClient, store: SQLiteStore, runtime: TestRuntime) -> None:
    """Calls by state, polls, latency, 429s, events, deliveries: all parse, with our numbers."""
    now = time.time()
    await store.track(NewCall(provider="ultravox", call_id=UV_ID), now)
    await store.track(NewCall(provider="envoy", call_id=ENVOY_ID), now)
    stats = runtime.scheduler.stats
    stats.polls.update({"ok": 7, "rate_limited": 2})
    stats.poll_seconds = 1.25
    stats.rate_limited["ultravox"] = 2
    stats.in_flight["envoy"] = 4
    stats.queued["envoy"] = 9
    stats.events.update({"call.started": 3, "call.ended": 1})
    stats.set_aside = 2
    relay = FakeRelay()
    for _ in range(5):
        relay.stats.record(endpoint="https://hooks.example/in?token=s3cret", per_call=False,
                           decision=Delivered(), latency=0.08)
    relay.stats.record(endpoint="https://x.example/cb", per_call=True,
                       decision=Retry(at=now + 5, reason="503"), latency=0.1)
    runtime.relay = relay
    await client.get("/healthz")
    reply = await client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    got = families(reply.text)

    calls = got["callwatch_calls"]
    assert calls[("callwatch_calls", (("provider", "ultravox"), ("state", "pending")))] == 1
    assert calls[("callwatch_calls", (("provider", "envoy"), ("state", "pending")))] == 1
    assert calls[("callwatch_calls", (("provider", "envoy"), ("state", "completed")))] == 0
    polls = got["callwatch_polls"]
    assert polls[("callwatch_polls_total", (("outcome", "ok"),))] == 7
    assert polls[("callwatch_polls_total", (("outcome", "transient"),))] == 0
    latency = got["callwatch_poll_duration_seconds"]
    assert latency[("callwatch_poll_duration_seconds_sum", ())] == 1.25
    assert latency[("callwatch_poll_duration_seconds_count", ())] == 9
    limited = got["callwatch_provider_rate_limited"]
    assert limited[("callwatch_provider_rate_limited_total", (("provider", "ultravox"),))] == 2
    assert limited[("callwatch_provider_rate_limited_total", (("provider", "envoy"),))] == 0
    assert got["callwatch_polls_in_flight"][
        ("callwatch_polls_in_flight", (("provider", "envoy"),))] == 4
    assert got["callwatch_polls_queued"][
        ("callwatch_polls_queued", (("provider", "envoy"),))] == 9
    assert got["callwatch_calls_set_aside"][("callwatch_calls_set_aside_total", ())] == 2
    emitted = got["callwatch_events_emitted"]
    assert emitted[("callwatch_events_emitted_total", (("type", "call.started"),))] == 3
    deliveries = got["callwatch_deliveries"]
    assert deliveries[("callwatch_deliveries_total", (("outcome", "delivered"),))] == 5
    assert deliveries[("callwatch_deliveries_total", (("outcome", "dead"),))] == 0
    assert got["callwatch_delivery_duration_seconds"][
        ("callwatch_delivery_duration_seconds_count", ())] == 6
    per_endpoint = got["callwatch_endpoint_deliveries"]
    assert per_endpoint[("callwatch_endpoint_deliveries_total",
                         (("endpoint", "https://hooks.example/in"),
                          ("outcome", "delivered")))] == 5
    assert per_endpoint[("callwatch_endpoint_deliveries_total",
                         (("endpoint", "per_call"), ("outcome", "failed")))] == 1
    assert "s3cret" not in reply.text
    assert got["callwatch_endpoint_delivery_duration_seconds"][
        ("callwatch_endpoint_delivery_duration_seconds_count", (("endpoint", "per_call"),))] == 1
    undelivered = got["callwatch_deliveries_undelivered"]
    assert undelivered[("callwatch_deliveries_undelivered", (("state", "dead"),))] == 0
    requests = got["callwatch_http_requests"]
    assert requests[("callwatch_http_requests_total",
                     (("code", "200"), ("route", "/healthz")))] == 1
    assert got["callwatch_build_info"]
    assert "callwatch_downloads" not in got  # no archiver here: skipped, not faked


async def test_metrics_without_relay_skip_its_families(client: httpx.AsyncClient) -> None:
    """What does not exist is left out; the scrape still succeeds."""
    got = families((await client.get("/metrics")).text)
    assert "callwatch_deliveries" not in got
    assert "callwatch_calls" in got and "callwatch_polls" in got


async def test_metrics_label_values_are_escaped(client: httpx.AsyncClient,
                                                runtime: TestRuntime) -> None:
    """A label value with quotes, backslashes or newlines still parses."""
    runtime.scheduler.stats.events['odd"type\\with\nnewline'] += 1
    got = families((await client.get("/metrics")).text)
    assert got["callwatch_events_emitted"][
        ("callwatch_events_emitted_total", (("type", 'odd"type\\with\nnewline'),))] == 1


async def test_metrics_read_the_archivers_own_stats(client: httpx.AsyncClient,
                                                   runtime: TestRuntime) -> None:
    """Downloads by outcome, bytes, in flight and paused come from ArchiverStats as it is."""
    runtime.archiver = FakeArchiver(stats=ArchiverStats(
        archived=4, archive_failed=1, bytes=4096, in_flight=2, paused="disk full"))
    got = families((await client.get("/metrics")).text)
    downloads = got["callwatch_downloads"]
    assert downloads[("callwatch_downloads_total", (("outcome", "archived"),))] == 4
    assert downloads[("callwatch_downloads_total", (("outcome", "archive_failed"),))] == 1
    assert got["callwatch_download_bytes"][("callwatch_download_bytes_total", ())] == 4096
    assert got["callwatch_downloads_in_flight"][("callwatch_downloads_in_flight", ())] == 2
    assert got["callwatch_archive_paused"][("callwatch_archive_paused", ())] == 1


async def test_metrics_carry_process_loop_lag_and_store_errors(
        client: httpx.AsyncClient, runtime: TestRuntime) -> None:
    """process_* from prometheus_client, the loop's worst lag, store refusals by operation."""
    runtime.loop_lag = LoopLagStats()
    runtime.loop_lag.add(100.0, 0.25)
    runtime.loop_lag.add(101.0, 0.02)
    errors = StoreErrors()
    errors(None, "error", {"event": "store.write_failed"})
    runtime.store_errors = errors.by_operation
    got = families((await client.get("/metrics")).text)
    assert got["callwatch_event_loop_lag_seconds"][("callwatch_event_loop_lag_seconds", ())] \
        == 0.25
    store_errors = got["callwatch_store_errors"]
    assert store_errors[("callwatch_store_errors_total", (("operation", "write"),))] == 1
    assert store_errors[("callwatch_store_errors_total", (("operation", "claim"),))] == 0
    assert got["process_resident_memory_bytes"][("process_resident_memory_bytes", ())] > 0


async def test_healthz_is_503_while_poll_results_cannot_be_committed(
        anonymous: httpx.AsyncClient, runtime: TestRuntime) -> None:
    """A writer holding uncommitted results past a minute fails the probe, lanes or not."""
    runtime.scheduler.stats.uncommitted_since = time.monotonic() - 90
    reply = await anonymous.get("/healthz")
    assert reply.status_code == 503
    assert "poll results could not be committed for 90 s" in reply.json()["error"]


async def test_healthz_is_503_when_a_poll_is_overdue_for_too_long(
        anonymous: httpx.AsyncClient, runtime: TestRuntime, store: SQLiteStore) -> None:
    """A call due 20 minutes ago that nobody polled, in a daemon up for an hour: 503."""
    now = time.time()
    runtime.started_wall = now - 3600
    await store.track(NewCall(provider="ultravox", call_id=UV_ID), now - 1200)
    reply = await anonymous.get("/healthz")
    assert reply.status_code == 503
    assert "the most overdue poll is" in reply.json()["error"]
