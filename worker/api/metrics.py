"""``GET /metrics``: what callwatch is doing, in the Prometheus text format.

Two kinds of source. The database gives totals that survive restarts (calls by provider and
state, events written, how late the most overdue poll is, open deliveries). In-process counters
give rates since this process started (polls, latency, 429s, events emitted, API requests);
Prometheus' ``rate()`` handles their reset at a restart.

The webhook relay and the archiver are optional: ``runtime.relay.stats`` and
``runtime.archiver.stats`` are read when they exist, attribute by attribute, so a part that is
missing (or not yet built) is skipped instead of failing the scrape. What is read:

* the relay: ``stats`` (a Counter outcome -> n, or an object with such a ``deliveries``);
  ``delivery_seconds`` (total seconds spent in attempts; their count is the sum of the
  outcomes) and ``oldest_pending_at`` (POSIX time of the oldest event not yet delivered, None
  when none), each an attribute or method of the relay or of its ``stats``.
* the archiver's ``stats``: ``archived`` and ``archive_failed`` (or a ``downloads`` Counter
  outcome -> n), ``bytes`` (archived), ``in_flight``, ``paused`` (None, or why).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from worker import __version__
from worker.api.asgi import Reply, Request
from worker.api.exposition import CONTENT_TYPE, Exposition, Labels
from worker.api.runtime import Context
from worker.model import CallStatus, FailureKind, Terminal

CALL_STATES = (*(str(s) for s in CallStatus), *(str(t) for t in Terminal))
POLL_OUTCOMES = ("ok", "not_found", *(str(k) for k in FailureKind))


async def metrics(ctx: Context, request: Request) -> Reply:
    del request
    out = Exposition()
    out.gauge("callwatch_build_info", "The running callwatch version (always 1).",
              [({"version": __version__}, 1)])
    await _database(ctx, out)
    _scheduler(ctx, out)
    _relay(getattr(ctx.runtime, "relay", None), out)
    _archiver(getattr(ctx.runtime, "archiver", None), out)
    _api(ctx, out)
    return Reply(200, out.render(), CONTENT_TYPE)


async def _database(ctx: Context, out: Exposition) -> None:
    counts = await ctx.runtime.store.counts()
    by_state = dict.fromkeys(((p, s) for p in ctx.runtime.config.providers for s in CALL_STATES),
                             0)
    by_state.update(counts.calls_by_state)
    out.gauge("callwatch_calls", "Tracked calls by provider and state (pending, live, ended "
              "while recordings settle, completed, tracking_failed).",
              (({"provider": p, "state": s}, n) for (p, s), n in sorted(by_state.items())))
    out.gauge("callwatch_outbox_events", "Events written to the outbox since the database "
              "was created.", [({}, counts.events)])
    lag = 0.0 if counts.oldest_due_at is None else max(0.0, time.time() - counts.oldest_due_at)
    out.gauge("callwatch_poll_lag_seconds", "How late the most overdue poll is (0: none is "
              "overdue); a growing value means polling cannot keep up.", [({}, lag)])
    tables = await ctx.runtime.store.table_stats()
    out.gauge("callwatch_database_size_bytes", "Size of the database (SQLite: the file, "
              "without its -wal); should level off once retention prunes.",
              [({}, tables.size_bytes)])
    out.gauge("callwatch_rows", "Rows per table (calls, events, deliveries, attempts).",
              [({"table": "calls"}, tables.calls), ({"table": "events"}, tables.events),
               ({"table": "deliveries"}, tables.deliveries),
               ({"table": "attempts"}, tables.attempts)])
    delivery_counts = getattr(ctx.runtime.store, "delivery_counts", None)
    if delivery_counts is not None:
        deliveries = await delivery_counts()
        out.gauge("callwatch_deliveries_undelivered", "Webhook deliveries not delivered, by "
                  "state: pending, retrying (pending after a failed attempt), disabled (the "
                  "endpoint answered 410), dead (gave up; can be replayed).",
                  [({"state": name}, getattr(deliveries, name, 0))
                   for name in ("pending", "retrying", "disabled", "dead")])


def _scheduler(ctx: Context, out: Exposition) -> None:
    stats = ctx.runtime.scheduler.stats
    polls = {**dict.fromkeys(POLL_OUTCOMES, 0), **stats.polls}  # zero series: rate() needs them
    out.counter("callwatch_polls_total", "Provider polls by outcome (ok, not_found, "
                "transient, rate_limited, config).", _by("outcome", polls))
    out.summary("callwatch_poll_duration_seconds", "Time spent waiting for providers' "
                "answers, per poll.", stats.poll_seconds, sum(stats.polls.values()))
    out.counter("callwatch_provider_rate_limited_total", "Polls a provider answered 429 or "
                "503 (rate limited), by provider.",
                _by("provider", {p: stats.rate_limited.get(p, 0) for p in _providers(ctx)}))
    out.gauge("callwatch_polls_in_flight", "Polls waiting for a provider's answer.",
              _by("provider", {p: stats.in_flight.get(p, 0) for p in _providers(ctx)}))
    out.gauge("callwatch_polls_queued", "Due calls claimed (leased) and waiting for a free "
              "poll slot; up to the provider's concurrency.",
              _by("provider", {p: stats.queued.get(p, 0) for p in _providers(ctx)}))
    out.counter("callwatch_events_emitted_total", "Events this process wrote, by type.",
                _by("type", stats.events))
    out.gauge("callwatch_scheduler_progress_age_seconds", "Seconds since the scheduler last "
              "went round its loop; /healthz fails past 30.",
              [({}, max(0.0, time.monotonic() - stats.last_progress))])


def _relay(relay: Any, out: Exposition) -> None:
    if relay is None:
        return
    stats = getattr(relay, "stats", None)
    deliveries = stats if isinstance(stats, Mapping) else getattr(stats, "deliveries", None)
    if isinstance(deliveries, Mapping):
        out.counter("callwatch_deliveries_total", "Webhook delivery attempts by outcome "
                    "(delivered, failed: will be retried, dead, disabled: endpoint gone).",
                    _by("outcome", deliveries))
        seconds = _lookup(relay, "delivery_seconds")
        if isinstance(seconds, int | float):
            out.summary("callwatch_delivery_duration_seconds", "Time from sending a webhook "
                        "to its endpoint's answer, per attempt.", seconds,
                        sum(deliveries.values()))
    oldest = _lookup(relay, "oldest_pending_at", missing=...)
    if oldest is not ...:
        out.gauge("callwatch_oldest_pending_event_age_seconds", "Age of the oldest event not "
                  "yet delivered to every endpoint (0: none).",
                  [({}, 0.0 if oldest is None else max(0.0, time.time() - float(oldest)))])


def _lookup(part: Any, name: str, missing: Any = None) -> Any:
    """``part.name``, else ``part.stats.name``, else ``missing``."""
    for holder in (part, getattr(part, "stats", None)):
        if hasattr(holder, name):
            value = getattr(holder, name)
            return value() if callable(value) else value
    return missing


def _archiver(archiver: Any, out: Exposition) -> None:
    stats = getattr(archiver, "stats", None)
    if stats is None:
        return
    downloads = getattr(stats, "downloads", None)
    if not isinstance(downloads, Mapping):  # the archiver's own shape: one int per outcome
        downloads = {name: getattr(stats, name) for name in ("archived", "archive_failed")
                     if isinstance(getattr(stats, name, None), int)}
    out.counter("callwatch_downloads_total", "Recordings fetched, by final outcome "
                "(archived: stored and verified; archive_failed: gave up).",
                _by("outcome", downloads))
    if isinstance(written := getattr(stats, "bytes", None), int):
        out.counter("callwatch_download_bytes_total", "Recording bytes archived.",
                    [({}, written)])
    if isinstance(in_flight := getattr(stats, "in_flight", None), int):
        out.gauge("callwatch_downloads_in_flight", "Downloads under way.", [({}, in_flight)])
    if callable(downloads_now := getattr(archiver, "downloads", None)):
        out.gauge("callwatch_download_bytes_in_flight", "Bytes received so far by the "
                  "downloads under way.", [({}, sum(p.bytes for _, p in downloads_now()))])
    if hasattr(stats, "paused"):
        out.gauge("callwatch_archive_paused", "1 while archiving is paused (a full or "
                  "read-only disk), else 0.", [({}, int(stats.paused is not None))])


def _api(ctx: Context, out: Exposition) -> None:
    out.counter("callwatch_http_requests_total", "API requests by route and status code.",
                (({"route": route, "code": str(code)}, n)
                 for (route, code), n in sorted(ctx.stats.requests.items())))
    hooks = Counter(dict.fromkeys(("polled", "ignored", "rejected"), 0))
    hooks.update(ctx.stats.ultravox_webhooks)
    out.counter("callwatch_ultravox_webhooks_total", "Ultravox webhooks received: polled "
                "(a call was made due), ignored (nothing to do), rejected (bad signature or "
                "stale).", _by("outcome", hooks))


def _providers(ctx: Context) -> list[str]:
    return sorted(ctx.runtime.config.providers)


def _by(label: str, values: Mapping[str, float]) -> Iterable[tuple[Labels, float]]:
    return (({label: str(key)}, value) for key, value in sorted(values.items()))
