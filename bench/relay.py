"""Webhook deliveries per second through the whole relay, next to a plain httpx loop.

Both POST the same event bodies to the same receiver (the simulator's webhook sink, in a
process of its own) at the same concurrency, in the same run, phases alternated:

* ``relay``: the real ``Relay`` on a fresh database holding ``events`` outbox events (of
  ``events / events_per_call`` calls): fan-out into deliveries, claim (leases, the ordering
  gate), sign (Standard Webhooks), POST, policy, group-committed record. Timed from start to
  the last delivery committed; logging on at the daemon's default level (into /dev/null).
* ``bare``: ``httpx.AsyncClient.post(url, content=body)`` in ``concurrency`` loops over the
  same bodies, over the same kind of connection pool, and nothing else.

The ratio relay/bare is the headline: what the store, the ordering, signing and recording
cost on top of HTTP. The simulator's CPU share says whether the receiver was the limit.
At loopback speed both are CPU-bound, so the ratio is one of CPU per delivery; with
``--receiver-delay 0.02`` (an endpoint 20 ms away) both are bound by the in-flight limit,
and the ratio shows whether the relay keeps every slot busy (results: relay-slow-receiver).

``--transport httpx,aiohttp``: both phases over each HTTP transport (``worker.http_aio``),
each kind on its own fresh outbox, alternated; the first kind's phases keep their names,
the others' are ``relay:KIND`` and ``bare:KIND``.

    python -m bench.relay                          # bench/results/relay.json
    python -m bench.relay --receiver-delay 0.02    # bench/results/relay-slow-receiver.json
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx

from bench.common import Phase, Report, Sim, Table, cli, median, simulator
from bench.polling import kinds_of, quiet_logs
from worker.config import Config, parse
from worker.events import call_event
from worker.http_aio import Kind
from worker.model import EventType
from worker.reconcile import Decision
from worker.store.base import NewCall, PollApplied
from worker.store.sqlite import SQLiteStore
from worker.webhooks import transport
from worker.webhooks.base import AttemptResult
from worker.webhooks.policy import Delivered
from worker.webhooks.relay import Relay

NAME = "relay"
SECRET = "whsec_YmVuY2gtc2VjcmV0LWJlbmNoLXNlY3JldC0xMjM0NTY3OA=="  # noqa: S105 - a test key
TYPES = (EventType.CALL_STARTED, EventType.CALL_ENDED, EventType.CALL_COMPLETED)


@dataclass(frozen=True, kw_only=True)
class Options:
    events: int = 6000  # outbox events per phase, each delivered to one endpoint
    events_per_call: int = 3  # ordered per call: at most one in flight per call
    concurrency: int = 8  # in flight to the endpoint: [delivery] max_in_flight_per_endpoint
    rounds: int = 3
    receiver_delay: float = 0.0  # seconds the receiver takes per answer (0.02: a far endpoint)
    transport: str = "httpx"  # the HTTP transport(s), comma-separated (worker.http_aio)


DEFAULT = Options()
QUICK = Options(events=600, rounds=1)


class CountingStore(SQLiteStore):
    """The real store, counting the deliveries it records as delivered."""

    delivered = 0

    async def record_attempts(self, results: Sequence[AttemptResult], now: float) -> None:
        await super().record_attempts(results, now)
        self.delivered += sum(isinstance(r.decision, Delivered) for r in results)


async def timed(work: Callable[[], Awaitable[int]], sim: Sim) -> Phase:
    t0, c0, s0 = time.perf_counter(), time.process_time(), sim.cpu_seconds()
    done = await work()
    t1, c1, s1 = time.perf_counter(), time.process_time(), sim.cpu_seconds()
    return Phase(done=done, seconds=t1 - t0, cpu_seconds=c1 - c0, sim_cpu_seconds=s1 - s0)


def bench_config(workdir: Path, sim: Sim, options: Options) -> Config:
    data = {"worker": {"database": "callwatch.db", "log_level": "info"},
            "providers": {"envoy": {"api_key_env": "KEY"}},
            "delivery": {"max_connections": 64,
                         "max_in_flight_per_endpoint": options.concurrency},
            "webhooks": [{"url": sim.sink_url, "secret_env": "SECRET", "timeout": 15}]}
    return parse(data, workdir / "callwatch.toml", {"KEY": "k", "SECRET": SECRET})


async def fill_outbox(path: Path, options: Options) -> list[bytes]:
    """A fresh database with ``options.events`` events; return their bodies in order."""
    store = await SQLiteStore.open(path)
    try:
        calls = options.events // options.events_per_call
        now = time.time()
        await store.track_many([(NewCall(provider="envoy", call_id=f"call_{n:06d}",
                                          metadata={"ticket": n, "team": "bench"}), now)
                                for n in range(calls)])
        tracked = await store.list_calls(limit=calls, include_terminal=True)
        batch = [PollApplied(decision=Decision(call=call, events=tuple(
            call_event(kind, call, now) for kind in TYPES[:options.events_per_call])))
            for call in tracked]
        await store.apply_poll_results(batch, now)
        return [e.body for e in await store.events_after(0, options.events)]
    finally:
        await store.close()


async def relay_phase(store: CountingStore, config: Config, expected: int,
                      kind: Kind = "httpx") -> int:
    """Start a relay on the filled database; return when all are recorded delivered."""
    relay = Relay(config, store, kind=kind)
    async with anyio.create_task_group() as tg:
        await tg.start(relay.run)
        while store.delivered < expected:  # noqa: ASYNC110 - a counter, polled cheaply
            await anyio.sleep(0.005)
        relay.stop()
    return store.delivered


async def bare_phase(url: str, bodies: Sequence[bytes], options: Options,
                     kind: Kind = "httpx") -> int:
    """``concurrency`` loops of ``client.post`` over the same bodies."""
    done = 0
    todo = iter(bodies)

    async def loop(client: httpx.AsyncClient) -> None:
        nonlocal done
        for body in todo:
            reply = await client.post(url, content=body,
                                      headers={"content-type": "application/json"})
            if reply.status_code != 200:
                raise RuntimeError(f"bare POST: HTTP {reply.status_code}")
            done += 1

    # The same small connection pools the relay uses, behind the ordinary client API.
    client = httpx.AsyncClient(transport=transport.connection_pool(64, kind), trust_env=False)
    async with client, anyio.create_task_group() as tg:
        for _ in range(options.concurrency):
            tg.start_soon(loop, client)
    return done


async def reset_sink(sim: Sim, delay: float) -> None:
    """Forget what the sink received (its memory must not grow over the rounds); set how
    long it takes to answer."""
    async with httpx.AsyncClient(base_url=sim.control_url) as control:
        (await control.delete("/_control/sink")).raise_for_status()
        (await control.post("/_control/sink", json={"delay": delay})).raise_for_status()


async def _round(root: Path, sim: Sim, options: Options, n: int) -> dict[str, Phase]:
    phases: dict[str, Callable[[], Awaitable[int]]] = {}
    stores: list[CountingStore] = []
    try:
        for i, kind in enumerate(kinds_of(options.transport)):
            suffix = "" if i == 0 else f":{kind}"
            workdir = root / f"round-{n}-{kind}"
            workdir.mkdir()
            config = bench_config(workdir, sim, options)
            bodies = await fill_outbox(workdir / "callwatch.db", options)
            store = await CountingStore.open(workdir / "callwatch.db")
            assert isinstance(store, CountingStore)
            stores.append(store)
            phases["relay" + suffix] = partial(relay_phase, store, config, len(bodies), kind)
            phases["bare" + suffix] = partial(bare_phase, sim.sink_url, bodies, options, kind)
        found = {}
        for name in (list(phases) if n % 2 == 0 else list(reversed(phases))):
            await reset_sink(sim, options.receiver_delay)
            found[name] = await timed(phases[name], sim)
    finally:
        for store in stores:
            await store.close()
    return found


async def _measure(options: Options) -> Report:
    quiet_logs("info")
    with tempfile.TemporaryDirectory(prefix="callwatch-bench-") as tmp:
        async with simulator(Path(tmp)) as sim:
            rounds = [await _round(Path(tmp), sim, options, n) for n in range(options.rounds)]
    return _report(options, rounds)


def _report(options: Options, rounds: list[dict[str, Phase]]) -> Report:
    names = ("relay", "bare")
    rate = {n: median(r[n].rate for r in rounds) for n in names}
    ratio = median(r["relay"].rate / r["bare"].rate for r in rounds)
    per_round: list[tuple[Any, ...]] = [
        (i, r["relay"].rate, r["bare"].rate, r["relay"].rate / r["bare"].rate)
        for i, r in enumerate(rounds, 1)]
    per_round.append(("median", rate["relay"], rate["bare"], ratio))
    main = Table(title=f"deliveries/s: {options.events} events ({options.events_per_call} per "
                       f"call), {options.concurrency} in flight, one endpoint answering in "
                       f"{options.receiver_delay * 1000:g} ms + loopback",
                 columns=("round", "relay", "bare httpx", "relay/bare"), rows=per_round)
    costs = Table(title="per phase (medians): CPU of this process per delivery, simulator CPU",
                  columns=("phase", "deliveries/s", "cpu ms/delivery", "sim cpu (cores)"),
                  rows=[(n, rate[n], median(r[n].cpu_ms for r in rounds),
                         median(r[n].sim_util for r in rounds)) for n in names])
    notes = [f"aim: relay/bare >= 0.7; measured {ratio:.2f}"]
    by_kind = {kind: median(r[f"relay:{kind}"].rate / r[f"bare:{kind}"].rate for r in rounds)
               for kind in kinds_of(options.transport)[1:]}
    if by_kind:
        first = kinds_of(options.transport)[0]
        notes.append(", ".join(f"relay/bare over {k}: {v:.2f}"
                               for k, v in {first: ratio, **by_kind}.items()))
        notes.append("per phase: " + ", ".join(
            f"{n} {median(r[n].rate for r in rounds):.0f}/s "
            f"{median(r[n].cpu_ms for r in rounds):.3f} ms CPU" for n in rounds[0]))
    if median(r["bare"].sim_util for r in rounds) > 0.9:
        notes.append("the receiver is near one full core during 'bare': it may be the limit")
    results = {"relay_over_bare": ratio, "deliveries_per_s": rate,
               "relay_over_bare_by_transport": by_kind,
               "rounds": [{n: {**asdict(p), "rate": p.rate} for n, p in r.items()}
                          for r in rounds]}
    name = NAME if not options.receiver_delay else f"{NAME}-slow-receiver"
    return Report(name=name, params=asdict(options), tables=[main, costs], notes=notes,
                  results=results)


def measure(options: Options) -> Report:
    return anyio.run(_measure, options)


def main(argv: Sequence[str] | None = None) -> int:
    return cli(NAME, __doc__, default=DEFAULT, quick=QUICK, measure=measure, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
