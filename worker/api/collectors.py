"""prometheus_client collectors reading callwatch's typed stats at scrape time.

Each collector turns one part's stats into metric families; nothing is counted twice (the
parts keep their own counters, the collectors only read them). Series whose labels are known
in advance (poll and delivery outcomes, configured providers) are all present from the first
scrape at 0, so alerts and ``rate()`` need no ``absent()``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from worker import __version__
from worker.api.runtime import Context
from worker.archive.archiver import ArchiverStats
from worker.model import CallStatus, FailureKind, Terminal
from worker.store.base import Counts, TableStats
from worker.webhooks.base import DeliveryCounts
from worker.webhooks.stats import RelayStats

CALL_STATES = (*(str(s) for s in CallStatus), *(str(t) for t in Terminal))
POLL_OUTCOMES = ("ok", "not_found", *(str(k) for k in FailureKind))
WEBHOOK_OUTCOMES = ("polled", "ignored", "rejected")


def counter(name: str, doc: str, label: str, values: Mapping[str, float]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([str(key)], value)
    return family


def gauge(name: str, doc: str, label: str, values: Mapping[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([str(key)], value)
    return family


@dataclass(frozen=True, kw_only=True, slots=True)
class DatabaseSnapshot:
    """What one scrape read from the database (asynchronously, before collecting)."""

    counts: Counts
    deliveries: DeliveryCounts
    tables: TableStats
    providers: tuple[str, ...]
    wall_now: float


class DatabaseCollector(Collector):
    """Totals that survive restarts: calls by state, events, poll lag, open deliveries."""

    def __init__(self) -> None:
        self.latest: DatabaseSnapshot | None = None  # set by the scrape just before collecting

    def collect(self) -> Iterator[Metric]:
        snap = self.latest
        if snap is None:
            return
        by_state = dict.fromkeys(((p, s) for p in snap.providers for s in CALL_STATES), 0)
        by_state.update(snap.counts.calls_by_state)
        calls = GaugeMetricFamily("callwatch_calls", "Tracked calls by provider and state "
                                  "(pending, live, ended while recordings settle, completed, "
                                  "tracking_failed).", labels=["provider", "state"])
        for (provider, state), n in sorted(by_state.items()):
            calls.add_metric([provider, state], n)
        yield calls
        yield GaugeMetricFamily("callwatch_outbox_events", "Events written to the outbox since "
                                "the database was created.", value=snap.counts.events)
        due = snap.counts.oldest_due_at
        yield GaugeMetricFamily("callwatch_poll_lag_seconds", "How late the most overdue poll "
                                "is (0: none is overdue); a growing value means polling cannot "
                                "keep up.", value=0.0 if due is None else max(0.0,
                                                                              snap.wall_now - due))
        yield from table_families(snap.tables)
        yield gauge("callwatch_deliveries_undelivered", "Webhook deliveries not delivered, by "
                    "state: pending, retrying (pending after a failed attempt), disabled (the "
                    "endpoint answered 410), dead (gave up; can be replayed).", "state",
                    undelivered(snap.deliveries))


def table_families(tables: TableStats) -> Iterable[Metric]:
    yield GaugeMetricFamily("callwatch_database_size_bytes", "Size of the database (SQLite: "
                            "the file, without its -wal); levels off once retention prunes.",
                            value=tables.size_bytes)
    yield gauge("callwatch_rows", "Rows per table: calls, events, deliveries, attempts "
                "(delivery attempts logged).", "table",
                {"calls": tables.calls, "events": tables.events,
                 "deliveries": tables.deliveries, "attempts": tables.attempts})


def undelivered(counts: DeliveryCounts) -> dict[str, int]:
    return {"pending": counts.pending, "retrying": counts.retrying,
            "disabled": counts.disabled, "dead": counts.dead}


class LiveCollector(Collector):
    """In-process counters: rates since this process started (``rate()`` handles restarts)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        runtime = self.ctx.runtime
        info = GaugeMetricFamily("callwatch_build_info", "The running callwatch version "
                                 "(always 1).", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield from scheduler_families(self.ctx)
        if runtime.relay is not None:
            yield from relay_families(runtime.relay.stats)
        if runtime.archiver is not None:
            yield from archiver_families(runtime.archiver.stats)
            yield GaugeMetricFamily("callwatch_download_bytes_in_flight", "Bytes received so "
                                    "far by the downloads under way.",
                                    value=sum(p.bytes for _, p in runtime.archiver.downloads()))
        if runtime.loop_lag is not None:
            yield GaugeMetricFamily("callwatch_event_loop_lag_seconds", "The longest the event "
                                    "loop ran late over the last minute (a callback holding "
                                    "it); above 0.1 the daemon is starved.",
                                    value=runtime.loop_lag.worst())
        if runtime.store_errors is not None:
            yield counter("callwatch_store_errors_total", "Times the database refused an "
                          "operation (write, claim, read, release, delivery); each is retried, "
                          "a steady rate means the database is in trouble.", "operation",
                          runtime.store_errors)
        yield from api_families(self.ctx)


def scheduler_families(ctx: Context) -> Iterable[Metric]:
    stats = ctx.runtime.scheduler.stats
    providers = sorted(ctx.runtime.config.providers)
    yield counter("callwatch_polls_total", "Provider polls by outcome (ok, not_found, "
                  "transient, rate_limited, config).", "outcome",
                  {**dict.fromkeys(POLL_OUTCOMES, 0), **stats.polls})
    yield SummaryMetricFamily("callwatch_poll_duration_seconds", "Time spent waiting for "
                              "providers' answers, per poll.",
                              count_value=sum(stats.polls.values()), sum_value=stats.poll_seconds)
    yield counter("callwatch_provider_rate_limited_total", "Polls a provider answered 429 or "
                  "503 (rate limited), by provider.", "provider",
                  {p: stats.rate_limited.get(p, 0) for p in providers})
    yield gauge("callwatch_polls_in_flight", "Polls waiting for a provider's answer.",
                "provider", {p: stats.in_flight.get(p, 0) for p in providers})
    yield gauge("callwatch_polls_queued", "Due calls claimed (leased) and waiting for a free "
                "poll slot; up to the provider's concurrency.", "provider",
                {p: stats.queued.get(p, 0) for p in providers})
    yield counter("callwatch_events_emitted_total", "Events this process wrote, by type.",
                  "type", stats.events)
    now = time.monotonic()
    yield GaugeMetricFamily("callwatch_scheduler_progress_age_seconds", "Seconds since the "
                            "scheduler last went round its loop; /healthz fails past 30.",
                            value=max(0.0, now - stats.last_progress))
    yield CounterMetricFamily("callwatch_calls_set_aside_total", "Calls this process set "
                              "aside because the database cannot store their data (see "
                              "`callwatch status`); the others go on.", value=stats.set_aside)
    held = stats.uncommitted_since
    yield GaugeMetricFamily("callwatch_uncommitted_seconds", "How long the scheduler's writer "
                            "has held poll results it could not commit (0: none held).",
                            value=0.0 if held is None else max(0.0, now - held))


def relay_families(stats: RelayStats) -> Iterable[Metric]:
    yield counter("callwatch_deliveries_total", "Webhook delivery attempts by outcome "
                  "(delivered, failed: will be retried, dead, disabled: endpoint gone).",
                  "outcome", stats.deliveries)
    yield SummaryMetricFamily("callwatch_delivery_duration_seconds", "Time from sending a "
                              "webhook to its endpoint's answer, per attempt.",
                              count_value=stats.timed, sum_value=stats.delivery_seconds)
    by_endpoint = CounterMetricFamily("callwatch_endpoint_deliveries_total", "Webhook delivery "
                                      "attempts by endpoint (query string redacted; every "
                                      "per-call URL together as per_call) and outcome.",
                                      labels=["endpoint", "outcome"])
    latency = SummaryMetricFamily("callwatch_endpoint_delivery_duration_seconds", "Time to "
                                  "each endpoint's answer, per attempt.", labels=["endpoint"])
    for endpoint, one in sorted(stats.endpoints.items()):
        for outcome, n in sorted(one.deliveries.items()):
            by_endpoint.add_metric([endpoint, outcome], n)
        latency.add_metric([endpoint], count_value=one.timed, sum_value=one.seconds)
    yield by_endpoint
    yield latency


def archiver_families(stats: ArchiverStats) -> Iterable[Metric]:
    yield counter("callwatch_downloads_total", "Recordings fetched, by final outcome "
                  "(archived: stored and verified; archive_failed: gave up).", "outcome",
                  {"archived": stats.archived, "archive_failed": stats.archive_failed})
    yield CounterMetricFamily("callwatch_download_bytes_total", "Recording bytes archived.",
                              value=stats.bytes)
    yield GaugeMetricFamily("callwatch_downloads_in_flight", "Downloads under way.",
                            value=stats.in_flight)
    yield GaugeMetricFamily("callwatch_archive_paused", "1 while archiving is paused (a full "
                            "or read-only disk), else 0.", value=int(stats.paused is not None))


def api_families(ctx: Context) -> Iterable[Metric]:
    requests = CounterMetricFamily("callwatch_http_requests_total", "API requests by route "
                                   "and status code.", labels=["route", "code"])
    for (route, code), n in sorted(ctx.stats.requests.items()):
        requests.add_metric([route, str(code)], n)
    yield requests
    yield counter("callwatch_ultravox_webhooks_total", "Ultravox webhooks received: polled (a "
                  "call was made due), ignored (nothing to do), rejected (bad signature or "
                  "stale).", "outcome",
                  {**dict.fromkeys(WEBHOOK_OUTCOMES, 0), **ctx.stats.ultravox_webhooks})
