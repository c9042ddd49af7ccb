"""The relay: follows the outbox, delivers every event to its endpoints, records each attempt.

Shape (one task group, no hand-kept task dicts, like the scheduler)::

    loop:    fan_out (events -> deliveries, cursor) -> claim (leases) -> slots (per endpoint)
    senders: take from slots -> sign -> POST (bounded) -> policy.decide --stream--> writer
    writer:  record_attempts, many per transaction (group commit) -> wake the loop

* Deliveries live in the database: what is due, retried, dead or in flight survives a
  restart or a kill -9 (a dead relay's leases are released at the next start).
* Order per (call, endpoint) is the store's claim gate; endpoints and calls never wait for
  each other: each configured endpoint has its own ``max_in_flight``, its own claims and its
  own connection pool; all per-call URLs share one budget (``[call_webhooks]
  max_in_flight``), one claim and one guarded pool (``pools``). There are as many senders
  as all those limits together, so no endpoint ever waits for a sender another holds.
* The loop wakes on the scheduler's commits (new events), on recorded results, when an
  endpoint's queue runs low, on the next due retry, and at least every ``idle_wait``
  seconds (events or replays written by another process).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import anyio
import httpx
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from worker.config import Config
from worker.http_aio import DEFAULT, Kind
from worker.store.base import DeliveryStore
from worker.store.errors import PermanentStoreError, StoreError
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
from worker.webhooks.guarded import Resolver, resolve
from worker.webhooks.policy import Dead, Decision, Delivered, Disabled, Retry, decide
from worker.webhooks.pools import Pools
from worker.webhooks.slots import AHEAD, Slots
from worker.webhooks.stats import RelayStats

log = structlog.get_logger("worker.webhooks")

LEASE_MARGIN = 60.0  # a lease outlives the longest attempt by this much
MIN_IDLE = 0.01  # never spin: an idle loop sleeps at least this long
FAN_OUT_BATCH = 500
COMMIT_WINDOW = 0.002  # seconds the writer waits for more results to share a transaction


class _CommitSource(Protocol):
    def on_commit(self, listener: Callable[[], None]) -> None: ...


class Relay:
    """Delivers webhooks until ``stop()``; then lets in-flight attempts finish and records them."""

    name = "relay"

    def __init__(self, config: Config, store: DeliveryStore, *,
                 clock: Callable[[], float] = time.time,
                 rng: Callable[[], float] = random.random,
                 idle_wait: float = 1.0, batch_size: int = 256,
                 resolver: Resolver = resolve, kind: Kind = DEFAULT) -> None:
        self._store = store
        self._endpoints = Endpoints(config)
        self._pools = Pools(self._endpoints, resolver=resolver, kind=kind)
        self._senders: tuple[anyio.abc.TaskGroup, MemoryObjectSendStream[AttemptResult]
                             ] | None = None
        self._sender_count = 0
        self._clock = clock
        self._rng = rng
        self._idle_wait = idle_wait
        self._batch_size = batch_size
        self._wakeup = anyio.Event()
        self._slots = Slots(self._limit, on_low=self._nudge,
                            shared=self._shared,
                            shared_limit=lambda: self._endpoints.per_call_budget)
        self._new_events = True  # look in the outbox at the next turn of the loop
        self._fanned_out_at = 0.0  # monotonic: when the loop last looked in the outbox
        self._stopping = False
        self._progress = time.monotonic()
        self._uncommitted_since: float | None = None  # the writer's batch, while unrecorded
        self.stats = RelayStats()  # attempts by outcome, in total and per endpoint

    @classmethod
    def attach(cls, config: Config, store: DeliveryStore,
               scheduler: _CommitSource, *, kind: Kind = DEFAULT) -> Relay:
        """A relay that wakes whenever ``scheduler`` commits new events."""
        relay = cls(config, store, kind=kind)
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
        self._pools.reconfigure(self._endpoints)
        self._add_senders()
        self._nudge()

    def _shared(self, url: str) -> bool:
        return self._endpoints.shared(url)  # looked up each time: SIGHUP may change it

    def _limit(self, url: str) -> int:
        return self._endpoints.limit(url)  # looked up each time: SIGHUP may change it

    def _nudge(self) -> None:
        """Look for due deliveries now (not for new events)."""
        self._wakeup.set()

    def progress(self) -> float:
        """When the loop last went round, or since when the writer has been trying to record
        a batch, whichever is older (monotonic): the watchdog's input. The loop goes round
        every second even while nothing can be recorded."""
        stuck = self._uncommitted_since
        return self._progress if stuck is None else min(self._progress, stuck)

    def describe(self) -> str:
        in_flight = sum(self._slots.in_flight.values())
        return f"{in_flight} deliveries in flight, {self._slots.total - in_flight} queued"

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self._store.recover_deliveries(self._clock())
        results, to_record = anyio.create_memory_object_stream[AttemptResult](
            self._batch_size * 4)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer, to_record)
                async with results, anyio.create_task_group() as senders:
                    # Long-lived senders, as many as all limits together: cheaper than a task
                    # per attempt. Stopping closes the slots; each finishes its attempt first.
                    self._senders = (senders, results)
                    self._add_senders()
                    task_status.started()
                    await self._loop()
                    self._slots.close()
                    self._senders = None
        finally:
            with anyio.CancelScope(shield=True):
                await self._release()
                await self._pools.aclose()

    def _add_senders(self) -> None:
        """Start senders until there are as many as the limits allow in flight (a SIGHUP
        that adds endpoints adds senders; extra ones after a shrink just wait)."""
        if self._senders is None:
            return
        group, results = self._senders
        while self._sender_count < self._endpoints.senders:
            self._sender_count += 1
            group.start_soon(self._sender, results.clone())

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
        """Lease what the slots have room for: in flight plus as many again waiting.

        Two claims: the configured endpoints (each up to its own room), then the per-call
        URLs (together up to their shared room). One claim with one overall limit would let
        a backlog of per-call deliveries take every place and starve the configured ones.
        """
        endpoints = self._endpoints
        # A waiting delivery starts within one attempt's time (those ahead of it are done
        # by then) and takes at most one more.
        lease = AHEAD * endpoints.longest_timeout + LEASE_MARGIN
        rooms = self._slots.room(endpoints.configured)
        own = {url: room for url, room in rooms.items() if url in endpoints.configured}
        first = await self._store.claim_due_deliveries(
            self._clock(), free=own, default_free=0, limit=sum(max(0, r) for r in own.values()),
            lease_seconds=lease)
        shared_room = self._slots.shared_room
        if shared_room <= 0:
            return first
        others = {url: (0 if url in own else min(room, shared_room))
                  for url, room in rooms.items()}
        try:
            second = await self._store.claim_due_deliveries(
                self._clock(), free=others,
                default_free=min(AHEAD * endpoints.per_call_limit, shared_room),
                limit=shared_room, lease_seconds=lease)
        except StoreError as exc:  # the first claim holds leases: never drop what it took
            log.warning("delivery.claim_failed", error=str(exc))
            return first
        due = [t for t in (first.next_due_at, second.next_due_at) if t is not None]
        return Claim(deliveries=first.deliveries + second.deliveries,
                     next_due_at=min(due, default=None))

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

    async def _sender(self, results: MemoryObjectSendStream[AttemptResult]) -> None:
        async with results:
            while (item := await self._slots.take()) is not None:
                await self._attempt(self._pools.for_url(item.endpoint), item, results)

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
        self.stats.record(endpoint=item.endpoint, per_call=item.per_call, decision=decision,
                          latency=attempt.latency if attempt is not None else None)
        if isinstance(decision, Delivered):  # the hot path: no bound logger to build
            log.debug("delivery.succeeded", event_id=item.event_id, call_id=item.call_id,
                      endpoint=safe_url(item.endpoint), attempt=item.attempt, status=status)
            return
        bound = log.bind(event_id=item.event_id, type=item.event_type, provider=item.provider,
                         call_id=item.call_id, endpoint=safe_url(item.endpoint),
                         attempt=item.attempt)
        match decision:
            case Retry():
                bound.warning("delivery.failed", status=status, reason=decision.reason,
                              next_attempt_in=round(max(0.0, decision.at - self._clock()), 3))
            case Dead():
                bound.error("delivery.dead", status=status, reason=decision.reason)
            case Disabled():
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
        self._uncommitted_since = time.monotonic()
        await write_isolating(batch, lambda items: self._store.record_attempts(
            items, self._clock()), self._refused, log)
        self._uncommitted_since = None
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
