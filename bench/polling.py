"""Polls per second through the whole scheduler, next to a bare httpx loop in the same run.

Several ways of making the same GETs against the simulator (its own process), at the same
concurrency (``concurrency`` per provider), phases alternated ABAB and repeated:

* ``pipeline``: the real ``Scheduler`` with the real lanes (``worker.daemon.lanes_for``) and
  the daemon's one ``httpx.AsyncClient`` (``worker.daemon.http_client``): claim due calls in
  SQLite, GET through the adapter, ``reconcile.on_poll``, group commit. Counted when
  committed. Logging is on at the daemon's default level (into /dev/null, as JSON).
* ``bare``: the same client doing the same GETs (URLs and headers captured from the adapters'
  own requests), ``client.get`` in a loop and nothing else. The ratio pipeline/bare is the
  headline: what the scheduler, the store and reconcile cost on top of HTTP.
* ``raw``: keep-alive GETs over plain sockets, parsing only Content-Length: as cheap a client
  as Python allows, so it shows the simulator's own capacity. If ``bare`` came close to it,
  or the simulator's CPU were near 100 % during ``bare``, the simulator would be the limit.
* ``adapters``: ``provider.fetch_call`` in loops, without scheduler or store.
* ``scheduler``: the pipeline with providers that answer at once, without HTTP: what the
  scheduler, reconcile and the store cost per poll on their own.
* with ``--diagnose``, the pipeline on two stand-in stores (``bench/stand_ins.py``):
  ``memory`` (no SQLite at all) and ``loop-thread`` (the store's own SQL, run on the event
  loop's thread instead of aiosqlite's): where the pipeline's cost over the adapters goes.
* with ``--database postgresql://...``, ``pipeline-pg``: the same pipeline on the PostgreSQL
  store, in a fresh database on that server (created and dropped here) holding the same
  calls, alternated with the SQLite ``pipeline`` in the same rounds: both ratios to ``bare``
  come from the same run.

``--transport httpx,aiohttp``: the client over each HTTP transport (``worker.http_aio``);
the first one's phases keep their names, each other's ``bare`` and ``pipeline`` are added
as ``bare:KIND`` and ``pipeline:KIND``, all alternated in the same rounds. ``pipeline-pg``
and ``scheduler-pg`` run over the first transport only (their ratio is to its ``bare``).

Every call waits (not joined) for the whole run, so every poll is one GET that changes
nothing, the steady state of a long call (events are ``bench/outbox.py``'s business), and is
due again 1 ms after each poll: there is always more work than slots, so the figure is the
pipeline's capacity, not a configured rate.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import anyio
import httpx

from bench.common import (
    PROVIDERS,
    Phase,
    Report,
    Sim,
    Table,
    add_sim_calls,
    cli,
    live_scripts,
    median,
    simulator,
    write_config,
)
from bench.pgtools import fresh_database
from bench.stand_ins import InstantProvider, LoopThreadStore, MemoryStore
from worker import logs
from worker.config import Config, load
from worker.daemon import http_client, lanes_for
from worker.database_url import parse_postgres_url
from worker.http_aio import KINDS, Kind
from worker.model import TrackedCall
from worker.scheduler import Scheduler
from worker.store.base import NewCall, PollApplied, Store
from worker.store.postgres import PostgresStore
from worker.store.sqlite import SQLiteStore

NAME = "polling"
# Due again right after every poll: the lanes never run out of work.
TRACKING = {"poll_interval": 0.001, "pending_poll_interval": 0.001,
            "recording_poll_interval": 0.001}


@dataclass(frozen=True, kw_only=True)
class Options:
    calls: int = 3000  # tracked, split over the three providers
    concurrency: int = 32  # per provider: the daemon's default
    seconds: float = 3.0  # measured per phase
    warmup: float = 0.7  # per phase, not measured
    rounds: int = 6  # short phases, many rounds: neighbours in time see the same noise
    stock_pool: bool = False  # also time the pre-http_pool client (slow: ~40 ms CPU/request)
    diagnose: bool = False  # also the pipeline on the stand-in stores of stand_ins.py
    transport: str = "httpx"  # the client's HTTP transport(s), comma-separated (http_aio)
    database: str = ""  # a postgresql:// URL: also the pipeline on PostgreSQL (pipeline-pg)


DEFAULT = Options()
QUICK = Options(calls=300, seconds=1.0, warmup=0.3, rounds=1)


StandIn = MemoryStore | LoopThreadStore


class CountingStore(SQLiteStore):
    """The real store, counting the poll results it commits."""

    committed = 0

    async def apply_poll_results(self, items: Sequence[PollApplied], now: float) -> None:
        await super().apply_poll_results(items, now)
        self.committed += len(items)


class CountingPgStore(PostgresStore):
    """The PostgreSQL store, counting the poll results it commits."""

    committed = 0

    async def apply_poll_results(self, items: Sequence[PollApplied], now: float) -> None:
        await super().apply_poll_results(items, now)
        self.committed += len(items)


@contextlib.asynccontextmanager
async def pg_store(options: Options, scripts: Sequence[Mapping[str, Any]]
                   ) -> AsyncIterator[CountingPgStore | None]:
    """With ``--database``: the PostgreSQL store in a fresh database, the same calls
    tracked in it (through ``track_many``, as in SQLite); dropped afterwards."""
    if not options.database:
        yield None
        return
    async with fresh_database(options.database) as url:
        store = await CountingPgStore.open(parse_postgres_url(url, None))
        assert isinstance(store, CountingPgStore)
        try:
            now = time.time()
            await store.track_many([(NewCall(provider=s["provider"], call_id=s["call_id"]),
                                     now) for s in scripts])
            yield store
        finally:
            await store.close()


async def pg_pipeline_phase(store: CountingPgStore, config: Config,
                            client: httpx.AsyncClient, options: Options, sim: Sim, *,
                            instant: bool = False) -> Phase:
    """``pipeline_phase`` on PostgreSQL; any lease left afterwards is handed back, so every
    round starts with all the calls free."""
    try:
        return await pipeline_phase(store, config, client, options, sim, instant=instant)
    finally:
        await store.release_leases()


async def window(count: Callable[[], int], seconds: float, sim: Sim) -> Phase:
    """Measure ``count()`` growth, our CPU and the simulator's over ``seconds``."""
    n0, t0, c0, s0 = count(), time.perf_counter(), time.process_time(), sim.cpu_seconds()
    await anyio.sleep(seconds)
    n1, t1, c1, s1 = count(), time.perf_counter(), time.process_time(), sim.cpu_seconds()
    return Phase(done=n1 - n0, seconds=t1 - t0, cpu_seconds=c1 - c0, sim_cpu_seconds=s1 - s0)


# --------------------------------------------------------------------------- the clients


async def pipeline_phase(store: CountingStore | CountingPgStore | StandIn, config: Config,
                         client: httpx.AsyncClient, options: Options, sim: Sim, *,
                         instant: bool = False) -> Phase:
    """The real scheduler, started fresh, measured after its warm-up.

    ``instant``: its providers answer at once without HTTP, which leaves what the
    scheduler, reconcile and the store cost on their own.
    """
    lanes = lanes_for(config, client)
    if instant:
        lanes = {name: replace(lane, provider=InstantProvider()) for name, lane in lanes.items()}
    # A stand-in has only what the scheduler calls, not the whole Store Protocol.
    scheduler = Scheduler(cast(Store, store), lanes)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await anyio.sleep(options.warmup)
        phase = await window(lambda: store.committed, options.seconds, sim)
        scheduler.stop()
    return phase


async def adapter_phase(config: Config, client: httpx.AsyncClient,
                        scripts: Sequence[Mapping[str, Any]], options: Options,
                        sim: Sim) -> Phase:
    """``provider.fetch_call`` in loops: the adapters' cost, without scheduler or store."""
    work: list[tuple[Sequence[str], Step]] = []
    for name, lane in lanes_for(config, client).items():
        ids = [s["call_id"] for s in scripts if s["provider"] == name]
        work += [(share, lane.provider.fetch_call) for share in _shares(ids, options.concurrency)]
    return await loops_phase(work, options, sim)


Target = tuple[list[str], dict[str, str]]  # URLs of one provider's calls, the headers
Step = Callable[[str], Awaitable[object]]


def _shares(items: Sequence[str], concurrency: int) -> list[Sequence[str]]:
    """One share of the items per loop; never more loops than items."""
    return [items[k::concurrency] for k in range(min(concurrency, len(items)))]


async def loops_phase(work: Sequence[tuple[Sequence[str], Step]], options: Options,
                      sim: Sim) -> Phase:
    """One loop per ``(items, step)``, awaiting ``step`` on its items round and round; the
    steps finished in the window after the warm-up are the phase's count."""
    done = 0
    stopping = False

    async def loop(items: Sequence[str], step: Step) -> None:
        nonlocal done
        for item in itertools.cycle(items):
            if stopping:
                return
            await step(item)
            done += 1

    async with anyio.create_task_group() as tg:
        for items, step in work:
            tg.start_soon(loop, items, step)
        await anyio.sleep(options.warmup)
        phase = await window(lambda: done, options.seconds, sim)
        stopping = True
    return phase


async def bare_phase(client: httpx.AsyncClient, targets: Mapping[str, Target],
                     options: Options, sim: Sim) -> Phase:
    """``client.get`` in ``concurrency`` loops per provider, nothing else."""
    def bare_get(headers: dict[str, str]) -> Step:
        async def step(url: str) -> None:
            reply = await client.get(url, headers=headers)
            if reply.status_code != 200:
                raise RuntimeError(f"bare GET {url}: HTTP {reply.status_code}")
        return step

    work = [(share, bare_get(headers)) for urls, headers in targets.values()
            for share in _shares(urls, options.concurrency)]
    return await loops_phase(work, options, sim)


async def raw_phase(targets: Mapping[str, Target], options: Options, sim: Sim) -> Phase:
    """Keep-alive GETs on bare sockets: the simulator's capacity, not the client's."""
    async with contextlib.AsyncExitStack() as stack:
        work: list[tuple[Sequence[str], Step]] = []
        for urls, headers in targets.values():
            for share in _shares(urls, options.concurrency):
                first = httpx.URL(share[0])
                stream = await stack.enter_async_context(
                    await anyio.connect_tcp(first.host, first.port or 80))
                work.append((share, _raw_get(stream, first, headers)))
        return await loops_phase(work, options, sim)


def _raw_get(stream: anyio.abc.ByteStream, first: httpx.URL, headers: dict[str, str]) -> Step:
    """A GET of one URL on a kept-alive socket, its reply read by hand."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k != "host")
    host = f"Host: {first.host}:{first.port}\r\n"

    async def step(url: str) -> None:
        path = httpx.URL(url).raw_path.decode()
        await stream.send(f"GET {path} HTTP/1.1\r\n{host}{extra}\r\n".encode())
        await _read_reply(stream)
    return step


async def _read_reply(stream: anyio.abc.ByteStream) -> None:
    """Read one HTTP/1.1 reply that has a Content-Length; check it is a 200."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += await stream.receive()
    head, body = buffer.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"raw GET: {head[:40]!r}")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += await stream.receive()


async def capture_targets(client: httpx.AsyncClient, config: Config,
                          scripts: Sequence[Mapping[str, Any]]) -> dict[str, Target]:
    """Each provider's call URLs and headers, exactly as its adapter sends them."""
    seen: list[httpx.Request] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(request)

    client.event_hooks["request"].append(hook)
    try:
        lanes = lanes_for(config, client)
        targets: dict[str, Target] = {}
        for name in PROVIDERS:
            ids = [s["call_id"] for s in scripts if s["provider"] == name]
            await lanes[name].provider.fetch_call(ids[0])
            request = seen[-1]
            template = str(request.url).replace(ids[0], "{}")
            headers = {k: v for k, v in request.headers.items() if k != "host"}
            targets[name] = ([template.format(i) for i in ids], headers)
    finally:
        client.event_hooks["request"].remove(hook)
    return targets


# --------------------------------------------------------------------------- the run


def quiet_logs(level: str) -> None:
    """The daemon's logging (JSON, its level) into /dev/null: its cost, not its output."""
    devnull = open(os.devnull, "w")  # noqa: SIM115, PTH123 - lives as long as the process
    logs.setup(level, stream=devnull, json=True)


async def _setup(workdir: Path, sim: Sim, options: Options
                 ) -> tuple[Config, CountingStore, list[dict[str, Any]]]:
    scripts = live_scripts(options.calls, waiting=True)
    await add_sim_calls(sim, scripts)
    path, env = write_config(workdir, sim, tracking=TRACKING, concurrency=options.concurrency)
    config = load(path, env)
    quiet_logs(config.worker.log_level)
    store = await CountingStore.open(Path(config.worker.database))
    assert isinstance(store, CountingStore)
    now = time.time()
    await store.track_many([(NewCall(provider=s["provider"], call_id=s["call_id"]), now)
                            for s in scripts])
    return config, store, scripts


def stock_client(config: Config) -> httpx.AsyncClient:
    """The daemon's client as it was before ``worker.http_pool``: one pool for everything."""
    slots = sum(p.concurrency for p in config.providers.values())
    return httpx.AsyncClient(
        timeout=httpx.Timeout(15.0, connect=5.0),
        limits=httpx.Limits(max_connections=slots + 64, max_keepalive_connections=slots + 64),
        follow_redirects=False)


async def _rounds(options: Options, sim: Sim, config: Config, store: CountingStore,
                  scripts: list[dict[str, Any]], *, pg: CountingPgStore | None = None
                  ) -> list[dict[str, Phase]]:
    """Every phase once per round; the order reverses from one round to the next."""
    rounds: list[dict[str, Phase]] = []
    first, *others = kinds_of(options.transport)
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(http_client(config, first))
        stock = await stack.enter_async_context(stock_client(config))
        more = {kind: await stack.enter_async_context(http_client(config, kind))
                for kind in others}
        targets = await capture_targets(client, config, scripts)
        phases: dict[str, Callable[[], Awaitable[Phase]]] = {
            "bare": lambda: bare_phase(client, targets, options, sim),
            "adapters": lambda: adapter_phase(config, client, scripts, options, sim),
            "pipeline": lambda: pipeline_phase(store, config, client, options, sim),
            "raw": lambda: raw_phase(targets, options, sim),
            "scheduler": lambda: pipeline_phase(store, config, client, options, sim,
                                                instant=True),
        }
        for kind, other in more.items():
            phases[f"bare:{kind}"] = partial(bare_phase, other, targets, options, sim)
            phases[f"pipeline:{kind}"] = partial(pipeline_phase, store, config, other,
                                                 options, sim)
        if pg is not None:
            phases["pipeline-pg"] = lambda: pg_pipeline_phase(pg, config, client, options, sim)
            phases["scheduler-pg"] = lambda: pg_pipeline_phase(pg, config, client, options,
                                                               sim, instant=True)
        if options.stock_pool:
            phases["stock"] = lambda: bare_phase(stock, targets, options, sim)
        if options.diagnose:
            memory = MemoryStore(await _leased_copy(store))
            phases["memory"] = lambda: pipeline_phase(memory, config, client, options, sim)
            phases["loop-thread"] = lambda: _loop_thread_phase(store, config, client,
                                                               options, sim)
        for r in range(options.rounds):
            order = list(phases) if r % 2 == 0 else list(reversed(phases))
            rounds.append({name: await phases[name]() for name in order})
    return rounds


def kinds_of(text: str) -> list[Kind]:
    """``httpx,aiohttp`` as transport kinds, in that order."""
    found: list[Kind] = []
    for part in text.split(","):
        kind = next((k for k in KINDS if k == part.strip()), None)
        if kind is None:
            raise ValueError(f"--transport: {part!r} is none of {', '.join(KINDS)}")
        found.append(kind)
    return found


async def _leased_copy(store: CountingStore) -> list[TrackedCall]:
    """Every tracked call, as a claim reads it; the leases are handed straight back."""
    calls: list[TrackedCall] = []
    for name in PROVIDERS:
        calls += await store.claim_due_calls(name, time.time() + 3600, 1_000_000)
    await store.release_leases()
    return calls


async def _loop_thread_phase(store: CountingStore, config: Config, client: httpx.AsyncClient,
                             options: Options, sim: Sim) -> Phase:
    stand_in = LoopThreadStore(store.path, store.owner)
    try:
        return await pipeline_phase(stand_in, config, client, options, sim)
    finally:
        stand_in.close()


async def _measure(options: Options) -> Report:
    with tempfile.TemporaryDirectory(prefix="callwatch-bench-") as tmp:
        async with simulator(Path(tmp)) as sim:
            config, store, scripts = await _setup(Path(tmp), sim, options)
            try:
                async with pg_store(options, scripts) as pg:
                    rounds = await _rounds(options, sim, config, store, scripts, pg=pg)
            finally:
                await store.close()
    return _report(options, rounds)


def _report(options: Options, rounds: list[dict[str, Phase]]) -> Report:
    names = list(rounds[0])
    rate = {n: median(r[n].rate for r in rounds) for n in names}
    cpu = {n: median(r[n].cpu_ms for r in rounds) for n in names}
    sim_util = {n: median(r[n].sim_util for r in rounds) for n in names}
    ratio = median(r["pipeline"].rate / r["bare"].rate for r in rounds)
    adapters = median(r["adapters"].rate / r["bare"].rate for r in rounds)
    # CPU per request is steadier than a rate on a shared machine: the same ratio by CPU.
    by_cpu = median(r["bare"].cpu_ms / r["pipeline"].cpu_ms for r in rounds)
    per_round: list[tuple[Any, ...]] = [
        (i, *(r[n].rate for n in names), r["pipeline"].rate / r["bare"].rate)
        for i, r in enumerate(rounds, 1)]
    per_round.append(("median", *(rate[n] for n in names), ratio))
    main = Table(title=f"requests/s, {options.calls} calls, {options.concurrency} slots "
                       f"per provider, {options.seconds:g} s per phase",
                 columns=("round", *names, "pipeline/bare"), rows=per_round)
    costs = Table(title="per phase (medians): CPU of this process per request, simulator CPU",
                  columns=("phase", "req/s", "of bare", "cpu ms/req", "sim cpu (cores)"),
                  rows=[(n, rate[n], rate[n] / rate["bare"], cpu[n], sim_util[n])
                        for n in names])
    first, *others = kinds_of(options.transport)
    by_kind = {first: (ratio, by_cpu)}
    for kind in others:
        by_kind[kind] = (median(r[f"pipeline:{kind}"].rate / r[f"bare:{kind}"].rate
                                for r in rounds),
                         median(r[f"bare:{kind}"].cpu_ms / r[f"pipeline:{kind}"].cpu_ms
                                for r in rounds))
    notes = [f"aim: pipeline/bare >= 0.8; measured {ratio:.2f} by rate, {by_cpu:.2f} by CPU "
             f"per request (adapters alone: {adapters:.2f} by rate)",
             *(f"over {kind}: pipeline/bare {r:.2f} by rate, {c:.2f} by CPU per request"
               for kind, (r, c) in by_kind.items() if len(by_kind) > 1),
             f"the scheduler and store alone (providers answering at once): "
             f"{1000 * cpu['scheduler']:.0f} µs CPU per poll"]
    if "pipeline-pg" in rate:
        pg_ratio = median(r["pipeline-pg"].rate / r["bare"].rate for r in rounds)
        pg_by_cpu = median(r["bare"].cpu_ms / r["pipeline-pg"].cpu_ms for r in rounds)
        notes.append(f"PostgreSQL: pipeline-pg/bare {pg_ratio:.2f} by rate, {pg_by_cpu:.2f} "
                     f"by CPU per request (SQLite's pipeline in the same rounds: {ratio:.2f}); "
                     f"scheduler and store alone {1000 * cpu['scheduler-pg']:.0f} µs CPU per "
                     f"poll (SQLite {1000 * cpu['scheduler']:.0f} µs)")
        extra_results = {"pg_pipeline_over_bare": pg_ratio,
                         "pg_pipeline_over_bare_by_cpu": pg_by_cpu,
                         "pg_over_sqlite_pipeline": median(
                             r["pipeline-pg"].rate / r["pipeline"].rate for r in rounds)}
    else:
        extra_results = {}
    if sim_util["bare"] > 0.9 or rate["bare"] > 0.8 * rate["raw"]:
        notes.append("the simulator is close to its capacity during 'bare': it may be the limit")
    results = {"pipeline_over_bare": ratio, "pipeline_over_bare_by_cpu": by_cpu,
               "pipeline_over_bare_by_transport": {
                   k: {"by_rate": r, "by_cpu": c} for k, (r, c) in by_kind.items()},
               "adapters_over_bare": adapters,
               "polls_per_s": rate, "cpu_ms_per_request": cpu, "sim_cores": sim_util,
               "rounds": [{n: {**asdict(p), "rate": p.rate} for n, p in r.items()}
                          for r in rounds], **extra_results}
    return Report(name=NAME, params=asdict(options), tables=[main, costs], notes=notes,
                  results=results)


def measure(options: Options) -> Report:
    return anyio.run(_measure, options)


def main(argv: Sequence[str] | None = None) -> int:
    return cli(NAME, __doc__, default=DEFAULT, quick=QUICK, measure=measure, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
