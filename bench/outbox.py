"""Outbox throughput: events written and drained per second, next to a peer durable queue.

Ours, through the store's own methods on a fresh SQLite file (WAL, ``synchronous=NORMAL``):

* write: ``apply_poll_results`` with one event per poll result, the call's new state and its
  event in one transaction, ``batch`` results per transaction (1: a poll committed alone;
  64: the scheduler's group commit under load). The body is built from the event here, as
  the store does (compact JSON). The same poll results are also written without their
  events, so the events' own share of the write shows: ``1 / (t_with - t_without)`` per
  event, what the outbox adds to commits the polls make anyway.
* drain, read: ``events_after`` in pages of 500, as a follower of the outbox reads it (its
  cursor is its acknowledgement, nothing is written).
* drain, deliver: the webhook relay's store path without HTTP: ``fan_out`` (events into
  deliveries to one endpoint), ``claim_due_deliveries`` (leases, the per-call ordering
  gate) and ``record_attempts`` (a 200, the next event of the call promoted), until every
  event is delivered.

The peer: ``persist-queue``'s ``SQLiteAckQueue`` (WAL too) doing ``put`` of the same bodies,
then ``get`` + ``ack`` of each: once as shipped (``synchronous`` left at SQLite's FULL, an
fsync per commit), once at ``synchronous=NORMAL`` like ours. Every round uses fresh files;
the order of ours and the peer's alternates between rounds.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio
from persistqueue import SQLiteAckQueue

from bench.common import Report, Table, cli, median
from worker.events import body, call_event
from worker.model import CallStatus, Event, EventType, TrackedCall
from worker.reconcile import Decision
from worker.store.base import NewCall, PollApplied
from worker.store.sqlite import SQLiteStore
from worker.webhooks.base import AttemptLog, AttemptResult, Route
from worker.webhooks.policy import Delivered

NAME = "outbox"
ENDPOINT = "http://127.0.0.1:9/hooks"


@dataclass(frozen=True, kw_only=True)
class Options:
    events: int = 10_000
    calls: int = 500  # the events are spread over this many calls
    batch: int = 64  # poll results per transaction in the grouped write
    rounds: int = 3


DEFAULT = Options()
QUICK = Options(events=600, calls=60, batch=32, rounds=1)


class TunedAckQueue(SQLiteAckQueue):
    """The peer with ``synchronous=NORMAL``: the same durability as our store."""

    def _new_db_connection(self, path: str, multithreading: bool,
                           timeout: float) -> sqlite3.Connection:
        conn: sqlite3.Connection = super()._new_db_connection(path, multithreading, timeout)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn


# --------------------------------------------------------------------------- ours


async def _tracked(store: SQLiteStore, calls: int) -> list[TrackedCall]:
    now = time.time()
    await store.track_many([(NewCall(provider="ultravox", call_id=f"bench-{i:06d}",
                                     metadata={"bench": True, "n": i}), now)
                            for i in range(calls)])
    found = await store.list_calls(limit=calls, include_terminal=True)
    return [c.replace(status=CallStatus.LIVE, started_notified=True, next_poll_at=now + 60)
            for c in found]


def _items(calls: Sequence[TrackedCall], options: Options) -> list[PollApplied]:
    """``events`` poll results, one event each, cycling over the calls."""
    now = time.time()
    out = []
    for n in range(options.events):
        call = calls[n % len(calls)]
        event = call_event(EventType.CALL_STARTED, call, now)
        event = Event(type=event.type, key=f"bench:{n}", occurred_at=now, data=event.data)
        out.append(PollApplied(decision=Decision(call=call, events=(event,))))
    return out


async def our_write(store: SQLiteStore, items: Sequence[PollApplied], batch: int) -> int:
    for start in range(0, len(items), batch):
        await store.apply_poll_results(items[start:start + batch], time.time())
    return len(items)


async def our_read(store: SQLiteStore) -> int:
    seq, read = 0, 0
    while page := await store.events_after(seq, 500):
        seq, read = page[-1].seq, read + len(page)
    return read


async def our_deliver(store: SQLiteStore, expected: int) -> int:
    """fan_out, then claim and record until every delivery is done."""
    def route(event_type: str, call_webhook: str | None) -> list[Route]:
        return [Route(endpoint=ENDPOINT)]

    while await store.fan_out(route, time.time(), 500) == 500:
        pass
    done = 0
    while done < expected:
        now = time.time()
        claim = await store.claim_due_deliveries(now, free={ENDPOINT: 256}, default_free=256,
                                                 limit=256, lease_seconds=60)
        if not claim.deliveries:
            raise RuntimeError(f"nothing to claim after {done} of {expected} deliveries")
        await store.record_attempts([
            AttemptResult(delivery=d, decision=Delivered(),
                          attempt=AttemptLog(number=1, started_at=now, latency=0.001, status=200))
            for d in claim.deliveries], time.time())
        done += len(claim.deliveries)
    return done


# --------------------------------------------------------------------------- the peer


def peer_put(queue: SQLiteAckQueue, bodies: Sequence[bytes]) -> int:
    for item in bodies:
        queue.put(item)
    return len(bodies)


def peer_drain(queue: SQLiteAckQueue, expected: int) -> int:
    """get + ack each item; acked rows are cleared every 500, as its docs advise (a get
    scans past the acked rows still kept, so without it a drain slows down as it goes)."""
    for n in range(1, expected + 1):
        queue.ack(queue.get(block=False))
        if n % 500 == 0:
            queue.clear_acked_data(max_delete=0, keep_latest=0)
    return expected


# --------------------------------------------------------------------------- a round


async def _timed(work: Callable[[], Awaitable[int]]) -> float:
    """Events per second of one phase."""
    started = time.perf_counter()
    n = await work()
    return n / (time.perf_counter() - started)


async def _ours(root: Path, options: Options) -> tuple[dict[str, float], list[bytes]]:
    """Both writes (each on its own file), then both drains of the grouped one."""
    rates: dict[str, float] = {}
    for label, batch in (("write_1", 1), ("write_plain", options.batch),
                         ("write_batch", options.batch)):
        store = await SQLiteStore.open(root / f"ours-{label}.db")
        try:
            items = _items(await _tracked(store, options.calls), options)
            if label == "write_plain":  # the same poll results without their events
                items = [PollApplied(decision=Decision(call=i.decision.call)) for i in items]
            rates[label] = await _timed(lambda: our_write(store, items, batch))  # noqa: B023
            if label == "write_batch":
                rates["read"] = await _timed(lambda: our_read(store))  # noqa: B023
                rates["deliver"] = await _timed(
                    lambda: our_deliver(store, options.events))  # noqa: B023
        finally:
            await store.close()
    return rates, [body(item.decision.events[0]) for item in items]


def _peer(root: Path, bodies: Sequence[bytes], tuned: bool) -> dict[str, float]:
    """The peer, called directly: its API is synchronous, and nothing else runs meanwhile."""
    kind = TunedAckQueue if tuned else SQLiteAckQueue
    queue = kind(str(root / ("peer-normal" if tuned else "peer-full")), auto_resume=False)
    try:
        started = time.perf_counter()
        put = peer_put(queue, bodies) / (time.perf_counter() - started)
        started = time.perf_counter()
        drain = peer_drain(queue, len(bodies)) / (time.perf_counter() - started)
    finally:
        queue.close()
    return {"put": put, "get_ack": drain}


async def _round(options: Options, ours_first: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="callwatch-bench-") as tmp:
        root = Path(tmp)
        bodies: list[bytes] = []
        out: dict[str, float] = {}
        for part in (("ours", "peer") if ours_first else ("peer", "ours")):
            if part == "ours":
                rates, bodies = await _ours(root, options)
                out.update({f"ours_{k}": v for k, v in rates.items()})
            else:
                sample = bodies or await _sample_bodies(root, options)
                for tuned in (False, True):
                    rates = _peer(root, sample, tuned)
                    name = "peer_normal" if tuned else "peer_full"
                    out.update({f"{name}_{k}": v for k, v in rates.items()})
        return out


async def _sample_bodies(root: Path, options: Options) -> list[bytes]:
    """The bodies ours will write, when the peer goes first."""
    store = await SQLiteStore.open(root / "sample.db")
    try:
        items = _items(await _tracked(store, options.calls), options)
    finally:
        await store.close()
    return [body(item.decision.events[0]) for item in items]


# --------------------------------------------------------------------------- report


async def _measure(options: Options) -> Report:
    rounds = [await _round(options, ours_first=r % 2 == 0) for r in range(options.rounds)]
    return _report(options, rounds)


def _cycle(write: float, drain: float) -> float:
    """Events/s through write and drain one after the other (a queue's whole job)."""
    return 1 / (1 / write + 1 / drain)


def _report(options: Options, rounds: list[dict[str, float]]) -> Report:
    for r in rounds:
        r["ours_cycle"] = _cycle(r["ours_write_batch"], r["ours_deliver"])
        # What the events add to the same commits: time with them minus time without.
        r["ours_event_share"] = 1 / max(1e-9, 1 / r["ours_write_batch"]
                                        - 1 / r["ours_write_plain"])
        r["peer_normal_cycle"] = _cycle(r["peer_normal_put"], r["peer_normal_get_ack"])
        r["peer_full_cycle"] = _cycle(r["peer_full_put"], r["peer_full_get_ack"])
    m = {key: median(r[key] for r in rounds) for key in rounds[0]}
    ratio = {key: median(r[key] / r[peer] for r in rounds) for key, peer in (
        ("ours_write_1", "peer_normal_put"), ("ours_write_batch", "peer_normal_put"),
        ("ours_write_plain", "peer_normal_put"), ("ours_event_share", "peer_normal_put"),
        ("ours_read", "peer_normal_get_ack"), ("ours_deliver", "peer_normal_get_ack"),
        ("ours_cycle", "peer_normal_cycle"))}
    rows: list[tuple[Any, ...]] = [
        ("write: apply_poll_results, 1 per txn", m["ours_write_1"], ratio["ours_write_1"]),
        (f"write: apply_poll_results, {options.batch} per txn", m["ours_write_batch"],
         ratio["ours_write_batch"]),
        (f"  same poll results without events ({options.batch} per txn)",
         m["ours_write_plain"], ratio["ours_write_plain"]),
        ("  the events' own share of that write (1 / (t_with - t_without))",
         m["ours_event_share"], ratio["ours_event_share"]),
        ("drain: events_after (read)", m["ours_read"], ratio["ours_read"]),
        ("drain: fan_out + claim + record", m["ours_deliver"], ratio["ours_deliver"]),
        (f"cycle: write ({options.batch} per txn) then deliver", m["ours_cycle"],
         ratio["ours_cycle"]),
        ("peer put (synchronous=NORMAL)", m["peer_normal_put"], 1.0),
        ("peer get + ack (synchronous=NORMAL)", m["peer_normal_get_ack"], 1.0),
        ("peer put (as shipped: FULL)", m["peer_full_put"],
         m["peer_full_put"] / m["peer_normal_put"]),
        ("peer get + ack (as shipped: FULL)", m["peer_full_get_ack"],
         m["peer_full_get_ack"] / m["peer_normal_get_ack"]),
        ("peer cycle: put then get + ack (NORMAL)", m["peer_normal_cycle"], 1.0),
    ]
    table = Table(title=f"events/s, {options.events} events over {options.calls} calls "
                        f"(medians of {options.rounds} rounds)",
                  columns=("path", "events/s", "x peer (NORMAL)"), rows=rows)
    notes = ["aim: ours at least the peer's rate; the ratios compare with the peer at the "
             "same durability (synchronous=NORMAL)"]
    return Report(name=NAME, params=asdict(options), tables=[table], notes=notes,
                  results={"medians": m, "ratios": ratio, "rounds": rounds})


def measure(options: Options) -> Report:
    return anyio.run(_measure, options)


def main(argv: Sequence[str] | None = None) -> int:
    return cli(NAME, __doc__, default=DEFAULT, quick=QUICK, measure=measure, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
