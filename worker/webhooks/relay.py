"""The relay: follows the outbox, delivers every event to its endpoints, records each attempt.

Shape (one task group, no hand-kept task dicts, like the scheduler)::

    loop:    fan_out (events -> deliveries, cursor) -> claim (leases) -> slots (per endpoint)
    senders: take from slots -> sign -> POST (bounded) -> policy.decide --stream--> writer
    writer:  record_attempts, many per transaction (group commit) -> wake the loop

* Deliveries live in the database: what is due, retried, dead or in flight survives a
  restart or a kill -9 (a dead relay's leases are released at the next start).
* Order per (call, endpoint) is the store's claim gate; endpoints and calls never wait for
  each other, beyond the limits: ``max_in_flight`` per endpoint and ``max_connections``
  senders in all, sharing one connection pool.
* The loop wakes on the scheduler's commits (new events), on recorded results, when an
  endpoint's queue runs low, on the next due retry, and at least every ``idle_wait``
  seconds (events or replays written by another process).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

import anyio
import httpx
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from worker.config import Config
from worker.store.base import DeliveryStore
from worker.store.errors import PermanentStoreError
from worker.store.retry import until_written, write_isolating
from worker.webhooks import signing, transport
from worker.webhooks.base import (
    AttemptLog,
    AttemptResult,
    Claim,
    ClaimedDelivery,
    Route,
)
from worker.webhooks.endpoints import Endpoints, safe_url
from worker.webhooks.policy import Dead, Decision, Delivered, Disabled, Retry, decide
from worker.webhooks.slots import AHEAD, Slots

log = structlog.get_logger("worker.webhooks")

LEASE_MARGIN = 60.0  # a lease outlives the longest attempt by this much
MIN_IDLE = 0.01  # never spin: an idle loop sleeps at least this long
FAN_OUT_BATCH = 500
COMMIT_WINDOW = 0.002  # seconds the writer waits for more results to share a transaction


class _CommitSource(Protocol):
    def on_commit(self, listener: Callable[[], None]) -> None: ...


class Relay:
    """Delivers webhooks until ``stop()``; then lets in-flight attempts finish and records them."""

    def __init__(self, config: Config, store: DeliveryStore, *,
                 clock: Callable[[], float] = time.time,
                 rng: Callable[[], float] = random.random,
                 idle_wait: float = 1.0, batch_size: int = 256) -> None:
        self._store = store
        self._endpoints = Endpoints(config)
        self._max_connections = config.delivery.max_connections
        self._clock = clock
        self._rng = rng
        self._idle_wait = idle_wait
        self._batch_size = batch_size
        self._wakeup = anyio.Event()
        self._slots = Slots(self._limit, on_low=self._nudge)
        self._new_events = True  # look in the outbox at the next turn of the loop
        self._fanned_out_at = 0.0  # monotonic: when the loop last looked in the outbox
        self._stopping = False
        self._progress = time.monotonic()
        self.stats: Counter[str] = Counter()  # "delivered", "failed", "dead", "disabled"
        self.delivery_seconds = 0.0  # spent in attempts, for the metrics' mean latency

    @classmethod
    def attach(cls, config: Config, store: DeliveryStore,
               scheduler: _CommitSource) -> Relay:
        """A relay that wakes whenever ``scheduler`` commits new events."""
        relay = cls(config, store)
        scheduler.on_commit(relay.wake)
        return relay

    def wake(self) -> None:
        """New events were committed: fan them out and look for due deliveries now."""
        self._new_events = True
        self._wakeup.set()

    def stop(self) -> None:
        """Stop claiming; attempts in flight finish and are recorded, then ``run`` returns."""
        self._stopping = True
        self.wake()

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: new endpoints, filters, secrets and schedules apply to the next attempts."""
        self._endpoints = Endpoints(config)
        self._nudge()

    def _limit(self, url: str) -> int:
        return self._endpoints.limit(url)  # looked up each time: SIGHUP may change it

    def _nudge(self) -> None:
        """Look for due deliveries now (not for new events)."""
        self._wakeup.set()

    def progress(self) -> float:
        """When the loop last went round (monotonic): the watchdog's input."""
        return self._progress

    def describe(self) -> str:
        in_flight = sum(self._slots.in_flight.values())
        return f"{in_flight} deliveries in flight, {self._slots.total - in_flight} queued"

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self._store.recover_deliveries(self._clock())
        results, to_record = anyio.create_memory_object_stream[AttemptResult](
            self._batch_size * 4)
        try:
            async with transport.connection_pool(self._max_connections) as pool, \
                    anyio.create_task_group() as tg:
                tg.start_soon(self._writer, to_record)
                async with results, anyio.create_task_group() as senders:
                    # Long-lived senders, as many as connections: cheaper than a task per
                    # attempt. Stopping closes the slots; each finishes its attempt first.
                    for _ in range(self._max_connections):
                        senders.start_soon(self._sender, pool, results)
                    task_status.started()
                    await self._loop()
                    self._slots.close()
        finally:
            with anyio.CancelScope(shield=True):
                await self._release()

    # ----------------------------------------------------------------------- the loop

    async def _loop(self) -> None:
        while not self._stopping:
            self._progress = time.monotonic()
            self._wakeup = anyio.Event()  # fresh before the work: a wake during it counts
            try:
                # Also every idle_wait: events may come from another process.
                if self._new_events or time.monotonic() - self._fanned_out_at > self._idle_wait:
                    self._new_events, self._fanned_out_at = False, time.monotonic()
                    await self._fan_out()
                claim = await self._claim()
            except Exception:  # locked or full database: keep the relay alive, retry
                log.exception("delivery.store_failed")
                self._new_events = True
                await self._idle(self._clock() + 1.0, busy=False)
                continue
            self._slots.put(claim.deliveries)
            await self._idle(claim.next_due_at, busy=bool(claim.deliveries))

    async def _fan_out(self) -> None:
        """Turn new outbox events into deliveries (a cheap read when there are none)."""
        while not self._stopping:
            read = await self._store.fan_out(self._route, self._clock(), FAN_OUT_BATCH)
            if read < FAN_OUT_BATCH:
                return

    def _route(self, event_type: str, call_webhook: str | None) -> list[Route]:
        routes = self._endpoints.route(event_type, call_webhook)
        for route in routes:
            if route.dead_reason is not None:
                log.error("delivery.dead", endpoint=safe_url(route.endpoint), type=event_type,
                          reason=route.dead_reason)
        return routes

    async def _claim(self) -> Claim:
        """Lease what the slots have room for: in flight plus as many again waiting."""
        endpoints = self._endpoints
        return await self._store.claim_due_deliveries(
            self._clock(), free=self._slots.room(endpoints.configured),
            default_free=AHEAD * endpoints.per_call_limit,
            limit=AHEAD * self._max_connections - self._slots.total,
            # A waiting delivery starts within one attempt's time (those ahead of it are done
            # by then) and takes at most one more.
            lease_seconds=AHEAD * endpoints.longest_timeout + LEASE_MARGIN)

    async def _idle(self, next_due_at: float | None, *, busy: bool) -> None:
        """Wait for a wake-up (new events, results recorded, a queue running low), the next
        due retry, or the idle tick."""
        wait = self._idle_wait
        if next_due_at is not None:
            wait = min(wait, next_due_at - self._clock())
        if busy and wait <= 0:
            return
        with anyio.move_on_after(max(wait, MIN_IDLE)):
            await self._wakeup.wait()

    # ----------------------------------------------------------------------- one attempt

    async def _sender(self, pool: httpx.AsyncBaseTransport,
                      results: MemoryObjectSendStream[AttemptResult]) -> None:
        while (item := await self._slots.take()) is not None:
            await self._attempt(pool, item, results)

    async def _attempt(self, pool: httpx.AsyncBaseTransport, item: ClaimedDelivery,
                       send: MemoryObjectSendStream[AttemptResult]) -> None:
        try:
            result = await self._deliver(pool, item)
        except Exception:  # a bug must not stop the relay: the lease runs out, it is retried
            log.exception("delivery.crashed", event_id=item.event_id,
                          endpoint=safe_url(item.endpoint))
            return
        finally:
            self._slots.done(item)
        await send.send(result)  # the writer wakes the loop once it is recorded

    async def _deliver(self, pool: httpx.AsyncBaseTransport,
                       item: ClaimedDelivery) -> AttemptResult:
        endpoint = self._endpoints.get(item.endpoint, per_call=item.per_call)
        decision: Decision
        if isinstance(endpoint, str):
            decision = Dead(reason=endpoint)
            self._log(item, decision, None)
            return AttemptResult(delivery=item, decision=decision)
        started = self._clock()
        headers = signing.headers(item.event_id, int(started), item.body, endpoint.keys)
        reply = await transport.post(pool, item.endpoint, body=item.body, headers=headers,
                                     time_limit=endpoint.timeout, now=started)
        decision = decide(attempt=item.attempt, outcome=reply.outcome,
                          schedule=endpoint.retry_schedule, now=self._clock(), rng=self._rng())
        attempt = AttemptLog(number=item.attempt, started_at=started, latency=reply.latency,
                             status=reply.outcome.status, error=reply.outcome.error,
                             reply=reply.reply)
        self._log(item, decision, attempt)
        return AttemptResult(delivery=item, decision=decision, attempt=attempt)

    def _log(self, item: ClaimedDelivery, decision: Decision,
             attempt: AttemptLog | None) -> None:
        status = attempt.status if attempt else None
        if attempt is not None:
            self.delivery_seconds += attempt.latency
        if isinstance(decision, Delivered):  # the hot path: no bound logger to build
            self.stats["delivered"] += 1
            log.debug("delivery.succeeded", event_id=item.event_id, call_id=item.call_id,
                      endpoint=safe_url(item.endpoint), attempt=item.attempt, status=status)
            return
        bound = log.bind(event_id=item.event_id, type=item.event_type, provider=item.provider,
                         call_id=item.call_id, endpoint=safe_url(item.endpoint),
                         attempt=item.attempt)
        match decision:
            case Retry():
                self.stats["failed"] += 1
                bound.warning("delivery.failed", status=status, reason=decision.reason,
                              next_attempt_in=round(max(0.0, decision.at - self._clock()), 3))
            case Dead():
                self.stats["dead"] += 1
                bound.error("delivery.dead", status=status, reason=decision.reason)
            case Disabled():
                self.stats["disabled"] += 1
                bound.error("endpoint.disabled", status=status, reason=decision.reason,
                            hint="nothing is sent to it until `callwatch replay` re-enables it")

    # ----------------------------------------------------------------------- the writer

    async def _writer(self, receive: MemoryObjectReceiveStream[AttemptResult]) -> None:
        async with receive:
            async for first in receive:
                await self._commit(await self._gather(first, receive))

    async def _gather(self, first: AttemptResult,
                      receive: MemoryObjectReceiveStream[AttemptResult]) -> list[AttemptResult]:
        """A batch to commit: what is waiting, plus what attempts still in flight deliver
        within ``COMMIT_WINDOW``. One transaction then records many deliveries, and the
        loop claims their successors together; the price is a few ms of latency."""
        batch = [first]
        with anyio.move_on_after(COMMIT_WINDOW):
            while len(batch) < self._batch_size:
                try:
                    batch.append(receive.receive_nowait())
                    continue
                except anyio.WouldBlock:
                    if not self._slots.in_flight:
                        break  # nothing more is coming
                except anyio.EndOfStream:
                    break
                try:
                    batch.append(await receive.receive())
                except anyio.EndOfStream:
                    break
        return batch

    async def _commit(self, batch: Sequence[AttemptResult]) -> None:
        """Record a batch, retrying while the database refuses for a while; the leases keep
        it safe. An attempt the database refuses for good is narrowed down (bisection) and
        its delivery recorded dead, without its attempt log, so it cannot come back forever.
        """
        await write_isolating(batch, lambda items: self._store.record_attempts(
            items, self._clock()), self._refused, log)
        self._nudge()  # slots are free, and the next event of each chain is due

    async def _refused(self, result: AttemptResult, error: PermanentStoreError) -> None:
        delivery = result.delivery
        log.error("webhook.result_refused", provider=delivery.provider,
                  call_id=delivery.call_id, event_id=delivery.event_id,
                  endpoint=safe_url(delivery.endpoint), error=str(error))
        dead = AttemptResult(delivery=delivery,
                             decision=Dead(reason=f"result cannot be stored: {error}"[:300]))
        try:
            await until_written(lambda: self._store.record_attempts([dead], self._clock()), log)
        except PermanentStoreError as exc:  # its lease runs out; the next try meets this again
            log.exception("store.write_refused", what="dead delivery", error=str(exc))

    async def _release(self) -> None:
        try:
            released = await self._store.release_deliveries(self._clock())
        except Exception:
            log.exception("store.release_failed")
            return
        if released:
            log.info("delivery.leases_released", deliveries=released)
