"""Finds due calls in the database, polls them under per-provider limits, persists the results.

Shape (one task group, no hand-kept task dicts)::

    lane(ultravox) --claim--> pollers --PollApplied--> writer --> store (one txn per batch)
    lane(envoy)    ...
    lane(apifycloud) ...

* Calls live in the database, not in memory: a lane claims (leases) only as many due calls as
  it has free poll slots, so memory is bounded by the concurrency limits, not by how many
  calls are tracked.
* Each provider has its own lane, slot limit and token bucket, so a provider answering 429 (or
  hanging) slows only itself.
* The writer commits many results per transaction (group commit): one fsync-equivalent per
  batch instead of per call.
* An idle lane re-reads the next due time at least every ``idle_wait`` seconds, which is how a
  call tracked by another process (``callwatch track``) is picked up within about a second.
* A scheduling tick (``tick`` seconds): a lane that sleeps until a due time wakes on the next
  multiple of the tick instead, together with the other lanes, and claims every call due by
  then; the writer holds a result while polls are still in flight, up to a tick, so the polls
  of one tick share one commit. At a calm rate each poll otherwise cost its own wake-up,
  due-time read, claim and commit (three hand-offs to the database thread); the tick adds at
  most ``tick`` to a poll's lag and to its commit. ``wake()`` (a newly tracked call) and a
  freed slot are never held for the tick.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import anyio
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from worker.config import Config
from worker.model import FailureKind, NotFound, PollFailed, PollResult, Snapshot, TrackedCall
from worker.providers.base import Provider
from worker.ratelimit import TokenBucket
from worker.reconcile import Policy, on_poll
from worker.store.base import CallStore, PollApplied
from worker.store.errors import PermanentStoreError, StoreError
from worker.store.retry import until_written, write_isolating

log = structlog.get_logger("worker.scheduler")
# How long one wait for another process's change lasts before it is simply asked again.
CHANGE_WAIT = 30.0
TICK = 0.05  # seconds; see the module docstring and docs/benchmarks.md


@dataclass(frozen=True, kw_only=True, slots=True)
class Lane:
    """Everything the scheduler needs to poll one provider."""

    provider: Provider
    policy: Policy
    concurrency: int
    rate_limit: float


@dataclass(kw_only=True)
class SchedulerStats:
    """Live counters, read by ``status``, systemd STATUS= lines and metrics."""

    polls: Counter[str] = field(default_factory=Counter)  # outcome -> n
    poll_seconds: float = 0.0
    in_flight: Counter[str] = field(default_factory=Counter)  # provider -> polls under way
    queued: Counter[str] = field(default_factory=Counter)  # provider -> claimed, not started
    events: Counter[str] = field(default_factory=Counter)  # event type -> n
    commits: int = 0
    last_progress: float = field(default_factory=time.monotonic)
    lane_progress: dict[str, float] = field(default_factory=dict)  # provider -> monotonic
    rate_limited: Counter[str] = field(default_factory=Counter)  # provider -> 429/503 answers
    # Since when (monotonic) due results have been waiting for a commit the database refuses;
    # None while every result reaches it. Health turns red when this gets old.
    uncommitted_since: float | None = None
    set_aside: int = 0  # calls set aside by this process: their results cannot be stored


class Scheduler:
    """Polls due calls until ``stop()``; then finishes what is in flight and returns."""

    name = "scheduler"

    def __init__(self, store: CallStore, lanes: Mapping[str, Lane], *,
                 lanes_for: Callable[[Config], Mapping[str, Lane]] | None = None,
                 clock: Callable[[], float] = time.time,
                 rng: Callable[[], float] = random.random,
                 batch_size: int = 512, idle_wait: float = 1.0, tick: float = TICK) -> None:
        self._store = store
        self._lanes = dict(lanes)
        self._lanes_for = lanes_for  # how reconfigure() builds lanes from a new config
        self._clock = clock
        self._rng = rng
        self._batch_size = batch_size
        self._idle_wait = idle_wait
        self._tick = tick
        self._buckets = {name: TokenBucket(lane.rate_limit) for name, lane in lanes.items()}
        self._wakeups = {name: anyio.Event() for name in lanes}
        self._slot_freed: dict[str, anyio.Event] = {}  # set by a poll that ends (see _poller)
        self._stopping = False
        self._listeners: list[Callable[[], None]] = []
        self.stats = SchedulerStats()

    def on_commit(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after each committed batch that carried events.

        The relay and the archiver wake on it. A batch without events has nothing for either
        (a recording only becomes downloadable with its ``recording.available``): at a calm
        rate every poll is its own batch, and waking them anyway cost about eight database
        round trips per poll.
        """
        self._listeners.append(listener)

    @property
    def lanes(self) -> Mapping[str, Lane]:
        return self._lanes

    def bucket(self, provider: str) -> TokenBucket:
        """The provider's token bucket and 429 pause; discovery paces its list requests by it."""
        return self._buckets[provider]

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: new policies and limits from ``config`` (through ``lanes_for``)."""
        if self._lanes_for is not None:
            self.set_lanes(self._lanes_for(config))

    def set_lanes(self, lanes: Mapping[str, Lane]) -> None:
        """Take new policies and limits (SIGHUP) for providers that already have a lane."""
        for name, lane in lanes.items():
            if name in self._lanes:
                self._lanes[name] = lane
                self._buckets[name].rate = lane.rate_limit
                self.wake(name)

    def wake(self, provider: str | None = None) -> None:
        """Look for due calls now instead of at the next idle tick."""
        for name in [provider] if provider else list(self._wakeups):
            if name in self._wakeups:
                self._wakeups[name].set()

    def progress(self) -> float:
        """When the slowest lane last went round its loop, or since when the writer holds
        results it could not commit, whichever is older (monotonic): the watchdog's input.
        Idle lanes go round every second, so without the writer a scheduler that cannot
        commit would look healthy forever."""
        lanes = min(self.stats.lane_progress.values(), default=self.stats.last_progress)
        stuck = self.stats.uncommitted_since
        return lanes if stuck is None else min(lanes, stuck)

    def describe(self) -> str:
        """A fragment for the systemd STATUS= line."""
        queued = sum(self.stats.queued.values())
        return f"{sum(self.stats.in_flight.values())} polls in flight" + (
            f", {queued} due calls queued" if queued else "")

    def stop(self) -> None:
        """Stop claiming; polls in flight and the calls queued for them finish (they are
        leased), and their results are committed."""
        self._stopping = True
        self.wake()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        send, receive = anyio.create_memory_object_stream[PollApplied](self._batch_size * 4)
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._renew_leases)
            outer.start_soon(self._follow_changes)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer, receive)
                async with send:
                    for name in self._lanes:
                        tg.start_soon(self._lane, name, send.clone())
                task_status.started()
            outer.cancel_scope.cancel()  # lanes and writer are done: nothing left to renew

    async def _follow_changes(self) -> None:
        """Wake every lane, and whoever follows our commits (relay, archiver), when another
        process changed due work: a call tracked through another worker's API or the CLI, or
        events another worker wrote. Immediate on PostgreSQL (LISTEN/NOTIFY); on SQLite it
        never fires and the idle tick finds the change."""
        while True:
            try:
                changed = await self._store.wait_for_change(CHANGE_WAIT)
            except StoreError as exc:
                log.warning("store.listen_failed", error=str(exc))
                await anyio.sleep(self._idle_wait)
                continue
            if changed:
                self.wake()
                for listener in self._listeners:
                    listener()

    async def _renew_leases(self) -> None:
        """Keep the leases of calls being polled or waiting for their commit alive, so a short
        ``lease_seconds`` never lets another worker take a call we still hold."""
        while True:
            await anyio.sleep(self._store.lease_seconds / 3)
            busy = (sum(self.stats.in_flight.values()) or sum(self.stats.queued.values())
                    or self.stats.uncommitted_since is not None)
            if busy:
                try:
                    await self._store.extend_call_leases(self._clock())
                except StoreError as exc:
                    log.warning("store.write_failed", what="call leases", error=str(exc))

    # ----------------------------------------------------------------------- lanes

    async def _lane(self, name: str, send: MemoryObjectSendStream[PollApplied]) -> None:
        # Claimed calls go to a pool of long-lived pollers, one per slot, through an
        # unbounded stream (the claim itself is bounded by ``_room``): spawning a task per
        # poll cost ~20 µs of anyio bookkeeping on every poll.
        calls, claimed_calls = anyio.create_memory_object_stream[TrackedCall](float("inf"))
        pollers = 0
        # On the way out ``calls`` closes first: the pollers poll what is still queued (it is
        # leased), then end, and the task group waits for them.
        async with send, claimed_calls, anyio.create_task_group() as tg, calls:
            while not self._stopping:
                self.stats.last_progress = self.stats.lane_progress[name] = time.monotonic()
                lane = self._lanes[name]
                while pollers < lane.concurrency:  # more after a SIGHUP raised it
                    tg.start_soon(self._poller, name, claimed_calls.clone(), send.clone())
                    pollers += 1
                room = self._room(name)
                claimed: list[TrackedCall] = []
                if room > 0 and self._buckets[name].paused_for == 0:
                    try:
                        claimed = await self._store.claim_due_calls(name, self._clock(),
                                                                    room)
                    except Exception:  # locked or full database: keep the lane alive
                        log.exception("store.claim_failed", provider=name)
                        await anyio.sleep(1.0)
                        continue
                self.stats.queued[name] += len(claimed)
                for call in claimed:
                    calls.send_nowait(call)
                if room > 0 and len(claimed) == room:
                    continue  # more may be due right now
                await self._idle(name, room > 0)

    def _room(self, name: str) -> int:
        """How many more calls the lane may claim now.

        Up to twice its slots: a queue as deep as the slots keeps every slot busy while the
        next claim is under way. Claiming only into free slots left them idle for the whole
        claim, which under load waits its turn for the one database connection (~100 ms
        measured at saturation, when most slots sat empty); see docs/benchmarks.md.
        """
        stats = self.stats
        return 2 * self._lanes[name].concurrency - stats.queued[name] - stats.in_flight[name]

    async def _poller(self, name: str, claimed: MemoryObjectReceiveStream[TrackedCall],
                      send: MemoryObjectSendStream[PollApplied]) -> None:
        async with claimed, send:
            async for call in claimed:
                # More pollers than slots only after a SIGHUP lowered the concurrency (pollers
                # are never stopped): the extra ones wait here, holding their leased call.
                while self.stats.in_flight[name] >= self._lanes[name].concurrency:
                    await self._slot_freed.setdefault(name, anyio.Event()).wait()
                self.stats.queued[name] -= 1
                self.stats.in_flight[name] += 1
                await self._poll(name, call, send)

    async def _idle(self, name: str, had_room: bool) -> None:
        """Sleep until the next call is due (to the next tick), a slot frees up, or someone
        wakes us."""
        # A fresh event before reading the next due time: a wake() while we read must not be
        # lost (the API makes a call due, then wakes us, and expects a poll within ms).
        event = self._wakeups[name] = anyio.Event()
        wait = self._idle_wait
        paused = self._buckets[name].paused_for
        if paused:
            wait = min(wait, paused)
        elif had_room:
            try:
                due = await self._store.next_due_at(name)
            except Exception:
                log.exception("store.read_failed", provider=name)
                due = None
            if due is not None:
                wait = min(wait, max(0.0, due - self._clock()))
        if self._tick > 0:
            # The next multiple of the tick on the loop's clock: every lane due in the same
            # tick wakes in the same event-loop pass, and their polls overlap.
            now = anyio.current_time()
            deadline = (math.floor((now + wait) / self._tick) + 1) * self._tick
            with anyio.CancelScope(deadline=deadline):
                await event.wait()
            return
        if wait <= 0:
            return
        with anyio.move_on_after(wait):
            await event.wait()

    async def _poll(self, name: str, call: TrackedCall,
                    send: MemoryObjectSendStream[PollApplied]) -> None:
        lane = self._lanes[name]
        try:
            wait = self._buckets[name].reserve()
            if wait > 0:
                await anyio.sleep(wait)
            started = time.perf_counter()
            result = await self._fetch(lane.provider, call)
            self.stats.poll_seconds += time.perf_counter() - started
            self._note(name, call, result)
            decision = on_poll(call, result, self._clock(), lane.policy, self._rng())
            for event in decision.events:
                self.stats.events[str(event.type)] += 1
                log.info("event.emitted", provider=name, call_id=call.call_id,
                         type=str(event.type), recording_id=event.recording_id)
            applied = PollApplied(decision=decision, result=result)
            try:  # without the checkpoint of send(): one event-loop pass fewer per poll
                send.send_nowait(applied)
            except anyio.WouldBlock:  # the writer is behind (a slow disk): wait for room
                await send.send(applied)
        finally:
            self.stats.in_flight[name] -= 1
            if (freed := self._slot_freed.pop(name, None)) is not None:
                freed.set()
            # Only a full lane waits for room; one with room sleeps until its next call is
            # due. Woken when half its queue has gone to the pollers: one claim then refills
            # many, and a wake-up after every poll would cost a claim each time.
            if self._room(name) == max(1, self._lanes[name].concurrency // 2):
                self._wakeups[name].set()

    async def _fetch(self, provider: Provider, call: TrackedCall) -> PollResult:
        try:
            return await provider.fetch_call(call.call_id)
        except Exception as exc:  # an adapter bug must not take the daemon down
            log.exception("poll.crashed", provider=call.provider, call_id=call.call_id)
            return PollFailed(kind=FailureKind.TRANSIENT, message=f"adapter error: {exc!r}")

    def _note(self, name: str, call: TrackedCall, result: PollResult) -> None:
        # No bound logger per poll (binding costs ~10 µs): the paths that log name the call.
        match result:
            case Snapshot():
                self.stats.polls["ok"] += 1
            case NotFound():
                self.stats.polls["not_found"] += 1
                log.info("poll.not_found", provider=name, call_id=call.call_id)
            case PollFailed(kind=FailureKind.RATE_LIMITED):
                self.stats.polls["rate_limited"] += 1
                self.stats.rate_limited[name] += 1
                pause = result.retry_after if result.retry_after is not None else 1.0
                self._buckets[name].pause(pause)
                log.warning("poll.rate_limited", provider=name, call_id=call.call_id,
                            retry_after=pause)
            case PollFailed():
                self.stats.polls[str(result.kind)] += 1
                level = log.error if result.kind == FailureKind.CONFIG else log.warning
                level("poll.failed", provider=name, call_id=call.call_id,
                      kind=str(result.kind), reason=result.message)

    # ----------------------------------------------------------------------- writer

    async def _writer(self, receive: MemoryObjectReceiveStream[PollApplied]) -> None:
        async with receive:
            async for first in receive:
                batch = [first]
                # While polls are still in flight, their results join this batch, for up to a
                # tick: the polls of one tick then share one commit.
                deadline = anyio.current_time() + self._tick
                while len(batch) < self._batch_size:
                    try:
                        batch.append(receive.receive_nowait())
                        continue
                    except anyio.EndOfStream:
                        break
                    except anyio.WouldBlock:
                        pass
                    if not any(self.stats.in_flight.values()):
                        break
                    with anyio.move_on_after(deadline - anyio.current_time()):
                        try:
                            batch.append(await receive.receive())
                        except anyio.EndOfStream:
                            break
                        continue
                    break  # a tick went by: commit what there is
                await self._commit(batch)

    async def _commit(self, batch: list[PollApplied]) -> None:
        """Persist a batch, retrying while the database refuses for a while (disk full,
        locked); results it refuses for good are narrowed down to their calls, which are set
        aside, and the rest of the batch commits.

        The results stay in memory and the calls stay leased (renewed): nothing is lost, and
        if we die meanwhile the leases run out and the calls are simply polled again.
        """
        if self.stats.uncommitted_since is None:
            self.stats.uncommitted_since = time.monotonic()
        await write_isolating(
            batch, lambda items: self._store.apply_poll_results(items, self._clock()),
            self._set_aside, log)
        self.stats.uncommitted_since = None
        self.stats.commits += 1
        self.stats.last_progress = time.monotonic()
        if any(item.decision.events for item in batch):
            for listener in self._listeners:
                listener()

    async def _set_aside(self, item: PollApplied, error: PermanentStoreError) -> None:
        """One call's results cannot be stored: stop polling it, durably and loudly."""
        call = item.decision.call
        reason = f"poll results cannot be stored: {error}"
        log.error("poll.call_set_aside", provider=call.provider, call_id=call.call_id,
                  error=str(error), hint="the call is no longer polled; see `callwatch status`")
        self.stats.set_aside += 1
        try:
            await until_written(
                lambda: self._store.set_aside(call.provider, call.call_id, reason, self._clock()),
                log, provider=call.provider, call_id=call.call_id)
        except PermanentStoreError as exc:  # never loops: its lease runs out, it is polled again
            log.exception("store.set_aside_failed", provider=call.provider, call_id=call.call_id,
                      error=str(exc))
