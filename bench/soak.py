"""Fault soak: kill it, starve it, feed it garbage - then check from outside that nothing is lost.

The real daemon runs as a subprocess against the simulator (in this process) while a chaos
loop SIGKILLs and restarts it, throws 429 storms and 5xx bursts at it, cuts and expires its
downloads, takes the webhook receiver down or makes it answer 500, and fills the archive disk
(a small tmpfs, when this process may mount one). Afterwards every promise is checked from the
outside - the receiver's log, the archive files and their digests, the database:

* every tracked call ends in exactly one terminal event;
* every event reaches the endpoint at least once (duplicates counted), signed, in order per call;
* every recording the simulator made available is archived intact, or reported failed.

``--database postgresql://... --workers N`` runs N daemons on one fresh PostgreSQL database
(created on that server, dropped at the end unless ``--keep``); each kill takes a worker at
random, and the verdict adds: no call polled by two workers at once (the simulator counts
requests in flight per call), every event once in the outbox. ``--archive s3`` archives to a
moto S3 server on loopback (some recordings over one multipart part, kills aimed at open
uploads); the verdict reads every object back with a plain GET and counts partial objects,
unfinished multipart uploads and scratch objects left after the clean shutdown.

Short run (CI):  python -m bench.soak --calls 60 --kills 3
Long run:        python -m bench.soak --calls 600 --kills 200 --chaos-seconds 240 --seed 21
Several workers: python -m bench.soak --database postgresql://postgres@127.0.0.1:5432/postgres \
                     --workers 3 --kills 100
S3:              python -m bench.soak --archive s3 --kills 50
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from bench.soak_peers import (
    Bucket,
    BucketVerdict,
    fresh_database,
    inspect_bucket,
    upload_in_flight,
)
from tests.e2e.harness import DaemonUnderTest
from tests.s3server import running_s3_server
from worker.demo import FAST_TRACKING, write_config
from worker.simulator import Fault, Simulator, World, expected_sha256, run_simulator
from worker.simulator.world import CallScript, RecordingScript
from worker.store.base import NewCall, StoredEvent
from worker.store.factory import open_store

PROVIDERS = ("ultravox", "envoy", "apifycloud")
TERMINAL = ("call.completed", "call.tracking_failed")
MIB = 1 << 20
# Longer than the worst receiver fault (15 answers of 500 in a row, 2 s down) can exhaust
# when one delivery meets all of it: a small run has few deliveries in flight to share it.
RETRY_SCHEDULE = [0.5, 1, 2] + [2] * 22
# With --archive s3, this share of recordings spans more than one 5 MiB multipart part, so
# uploads stay open long enough for kills to land in them.
BIG_SHARE, BIG_SIZES = 0.25, (6 * MIB, 11 * MIB)


@dataclass
class SoakReport:
    """What the soak found; ``ok`` only when every promise held."""

    calls: int = 0
    database: str = "sqlite"
    workers: int = 1
    archive: str = "folder"
    kills: int = 0
    kills_by_worker: list[int] = field(default_factory=list)
    kills_with_upload_open: int = 0  # --archive s3: a multipart upload open at the kill
    events_expected: int = 0
    events_delivered: int = 0
    events_missing: int = 0
    deliveries_dead: int = 0  # gave up: the retry schedule is meant to outlast every fault
    duplicates_delivered: int = 0
    outbox_duplicates: int = 0  # one (call, type, recording) twice in the outbox
    out_of_order_calls: int = 0
    bad_signatures: int = 0
    calls_without_one_terminal: int = 0
    polls_of_one_call_at_once: int = 0  # the most requests for one call's path in flight
    paths_polled_at_once: list[str] = field(default_factory=list)
    recordings_expected: int = 0
    recordings_archived: int = 0
    recordings_reported_failed: int = 0
    recordings_corrupt: int = 0
    recordings_missing: int = 0
    stray_files: int = 0
    stray_paths: list[str] = field(default_factory=list)  # the first few, to look into
    s3_objects_checked: int = 0
    s3_partial_objects: int = 0
    s3_unfinished_uploads: int = 0
    s3_scratch_objects: int = 0
    archive_paused: str | None = None  # the archiver's pause reason when the run ended
    pauses: dict[str, int] = field(default_factory=dict)  # archive.paused lines, by reason
    integrity: str = ""
    unclean_exits: list[int] = field(default_factory=list)  # the final SIGTERM's non-0 codes
    recovery_seconds: list[float] = field(default_factory=list)
    faults: dict[str, int] = field(default_factory=dict)
    disk_fill: str = "off"
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Rig:
    """What one soak runs: the simulator, the workers, where they keep state and recordings."""

    sim: Simulator
    workers: list[DaemonUnderTest]
    database: Path | str  # a SQLite file, or the fresh PostgreSQL database's URL
    batches: list[list[CallScript]]  # tracked one after another through the chaos
    archive_dir: Path | None = None  # the folder target
    bucket: Bucket | None = None  # the S3 target
    mounted: bool = False  # archive_dir is a tmpfs of our own (the disk-full fault works)

    @property
    def scripts(self) -> list[CallScript]:
        return [s for batch in self.batches for s in batch]


def make_calls(world: World, n: int, rng: random.Random, *, big: bool = False,
               waves: int = 1, spread: float = 0.0) -> list[list[CallScript]]:
    """``n`` calls in ``waves`` batches, batch ``w`` created ``w * spread / waves`` seconds
    from now (tracked then, by ``feed``): work keeps arriving while the kills land."""
    batches: list[list[CallScript]] = [[] for _ in range(waves)]
    now = world.clock()
    for i in range(n):
        wave = i * waves // n
        provider = PROVIDERS[i % 3]
        joins = rng.random() > 0.1
        recordings = [RecordingScript(ready_after=rng.uniform(0.2, 2.0),
                                      size=_size(rng, big=big), fails=rng.random() < 0.1)
                      for _ in range(1 if provider != "apifycloud" else rng.randint(0, 2))]
        batches[wave].append(world.add_call(
            provider, starts_after=rng.uniform(0.2, 3.0) if joins else None,
            lasts=rng.uniform(1.0, 8.0), join_timeout=4.0,
            recordings=recordings if joins else (),
            created_at=now + wave * spread / waves))
    return batches


def _size(rng: random.Random, *, big: bool) -> int:
    size = rng.choice([4096, 65536, 300_000])
    if big and rng.random() < BIG_SHARE:  # drawn only then: folder runs keep their seeds' calls
        size = rng.choice(BIG_SIZES)
    return size


def disk_mb_for(scripts: list[CallScript]) -> int:
    """A tmpfs twice the size of every recording the calls will make, plus 16 MiB: room for
    all of them with the ballast gone, so a full disk is only ever the injected fault. (A
    48 MiB disk for 600 calls filled up for real: the daemon paused, correctly, and a third
    of the recordings waited out the settle window.)"""
    total = sum(r.size for s in scripts for r in s.recordings)
    return 16 + -(-2 * total // (1 << 20))


@contextlib.contextmanager
def small_disk(path: Path, size_mb: int) -> Iterator[bool]:
    """A tmpfs of ``size_mb`` at ``path`` when mounting is permitted; yields whether it is."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs",
                              str(path)], capture_output=True, check=False).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


FAULTS = ("rate_limit_storm", "server_errors", "bad_downloads", "receiver_500s",
          "receiver_down", "disk_full")


async def chaos(rig: Rig, args: argparse.Namespace, *, rng: random.Random,
                report: SoakReport) -> None:
    """Kill, restart and break things: every fault at least once, then at random until the
    kills are spent and the time is up. A kill takes one worker, drawn from ``rng``; with
    S3, half the kills first wait (a few seconds at most) for an upload to be open."""
    ballast = rig.archive_dir / "ballast" if rig.archive_dir and rig.mounted else None
    faults = [f for f in FAULTS if f != "disk_full" or ballast is not None]
    plan = ["kill"] * args.kills + faults
    rng.shuffle(plan)
    report.kills_by_worker = [0] * len(rig.workers)
    deadline = time.monotonic() + args.chaos_seconds
    while plan or time.monotonic() < deadline:
        await anyio.sleep(rng.uniform(0.3, 1.5))
        action = plan.pop() if plan else rng.choice(faults)
        report.faults[action] = report.faults.get(action, 0) + 1
        if action == "kill":
            await kill_one(rig, rng, report)
        else:
            await inject(action, rig.sim, rng, ballast)
    for target in rig.sim.faults.values():
        target.clear()
    rig.sim.sink.behave(fail_next=0)
    if ballast is not None and ballast.exists():
        ballast.unlink()


async def kill_one(rig: Rig, rng: random.Random, report: SoakReport) -> None:
    """SIGKILL one worker (at random), start it again, time until it says daemon.ready."""
    n = rng.randrange(len(rig.workers))
    if rig.bucket is not None:
        if rng.random() < 0.5:
            with anyio.move_on_after(4):
                while not await upload_in_flight(rig.bucket):  # noqa: ASYNC110 - S3's
                    await anyio.sleep(0.05)  # state, no event of ours to wait on
        report.kills_with_upload_open += await upload_in_flight(rig.bucket)
    worker = rig.workers[n]
    worker.kill()
    report.kills += 1
    report.kills_by_worker[n] += 1
    worker.start()
    started = time.monotonic()
    await worker.wait_ready(30)
    report.recovery_seconds.append(round(time.monotonic() - started, 3))


async def inject(action: str, sim: Simulator, rng: random.Random, ballast: Path | None) -> None:
    if action == "rate_limit_storm":
        sim.faults[rng.choice(PROVIDERS)].add(Fault.RATE_LIMIT, count=30, retry_after=1)
    elif action == "server_errors":
        sim.faults[rng.choice(PROVIDERS)].add(Fault.SERVER_ERROR, count=15)
    elif action == "bad_downloads":
        for kind in (Fault.TRUNCATE_BODY, Fault.EXPIRE_MID_DOWNLOAD, Fault.SLOW,
                     Fault.XML_ERROR_200):
            sim.faults["files"].add(kind, count=2, stall=0.5, delay=0.5)
    elif action == "receiver_500s":
        sim.sink.behave(fail_next=rng.randint(3, 15))
    elif action == "receiver_down":
        await sim.sink_down()
        await anyio.sleep(rng.uniform(0.5, 2.0))
        await sim.sink_up()
    elif action == "disk_full" and ballast is not None:
        _fill(ballast)  # freed by a later disk_full or at the end of the chaos
        await anyio.sleep(rng.uniform(0.5, 2.0))
        ballast.unlink()


def _fill(ballast: Path) -> None:
    """Fill the archive's disk to the last byte."""
    with contextlib.suppress(OSError), ballast.open("wb") as out:
        chunk = b"\0" * (1 << 20)
        while True:
            out.write(chunk)
            out.flush()


async def read_events(database: Path | str) -> list[StoredEvent]:
    """The whole outbox, in order, from either backend."""
    store = await open_store(database)
    try:
        return await store.events_after(0, 1_000_000)
    finally:
        await store.close()


async def settle(rig: Rig, timeout: float) -> None:
    """Wait until every call is terminal and the receiver has every event at least once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = await read_events(rig.database)
        terminal = {(e.provider, e.call_id) for e in events if e.type in TERMINAL}
        received = {r.header("webhook-id") for r in rig.sim.sink.requests if r.status < 300}
        if len(terminal) >= len(rig.scripts) and all(e.id in received for e in events):
            return
        await anyio.sleep(0.5)


def _signed(signer: Any, request: Any) -> bool:
    """Does the request carry the signature the reference library makes for it?"""
    try:
        stamp = datetime.fromtimestamp(int(request.header("webhook-timestamp") or ""), UTC)
        expected = signer.sign(request.header("webhook-id") or "", stamp,
                               request.body.decode())
    except (ValueError, UnicodeDecodeError):
        return False
    return expected in (request.header("webhook-signature") or "").split()


def check_deliveries(events: list[Any], sim: Simulator, secret: str,
                     report: SoakReport) -> None:
    from standardwebhooks import Webhook

    # The reference library signs; we compare at the request's own timestamp, because its
    # verify() also rejects messages older than 5 minutes, and a long soak outlasts that.
    signer = Webhook(secret)
    first_arrival: dict[str, int] = {}
    counts: dict[str, int] = defaultdict(int)
    for index, request in enumerate(sim.sink.requests):
        if request.status >= 300:
            continue
        msg_id = request.header("webhook-id") or ""
        counts[msg_id] += 1
        first_arrival.setdefault(msg_id, index)
        if not _signed(signer, request):
            report.bad_signatures += 1
    by_call: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for event in events:
        by_call[(event.provider, event.call_id)].append(event)
    report.events_expected = len(events)
    report.events_delivered = sum(1 for e in events if counts.get(e.id))
    report.events_missing = report.events_expected - report.events_delivered
    report.duplicates_delivered = sum(max(0, counts[e.id] - 1) for e in events)
    for call_events in by_call.values():
        arrivals = [first_arrival.get(e.id, -1) for e in call_events]
        if arrivals != sorted(arrivals):
            report.out_of_order_calls += 1
        if sum(e.type in TERMINAL for e in call_events) != 1 or \
                call_events[-1].type not in TERMINAL:
            report.calls_without_one_terminal += 1
    report.outbox_duplicates = count_outbox_duplicates(events)


def count_outbox_duplicates(events: list[StoredEvent]) -> int:
    """Events that say the same thing twice: one (call, type, recording) more than once,
    read from the bodies (not the ids, which the outbox's unique key already covers)."""
    said: Counter[tuple[str, str, str, str]] = Counter()
    for event in events:
        recording = json.loads(event.body).get("data", {}).get("recording") or {}
        said[(event.provider, event.call_id, event.type, str(recording.get("id", "")))] += 1
    return sum(n - 1 for n in said.values())


def check_polls(sim: Simulator, report: SoakReport) -> None:
    """The simulator's count of requests in flight per provider path (one path, one call)."""
    peak = sim.concurrency.peak
    report.polls_of_one_call_at_once = sim.concurrency.most_at_once()
    report.paths_polled_at_once = [f"{role} {path} x{n}" for (role, path), n
                                   in peak.most_common(10) if n > 1]


def count_pauses(workers: list[DaemonUnderTest]) -> dict[str, int]:
    """Every worker's ``archive.paused`` lines, by reason: the injected full disk explains
    some; with S3 nothing here injects one, so each is worth a look."""
    reasons: Counter[str] = Counter()
    for worker in workers:
        reasons.update(str(line.get("reason")) for line in worker.log_lines()
                       if line.get("event") == "archive.paused")
    return dict(reasons)


async def check_archive(rig: Rig, report: SoakReport) -> None:
    """Every recording the store calls archived is there, whole (its sha256 is the one the
    simulator computes for its content); nothing else is."""
    store = await open_store(rig.database)
    archived: dict[str, str] = {}  # archive path -> the simulator's sha256 of the content
    try:
        report.integrity = await store.integrity_check()
        report.deliveries_dead = (await store.delivery_counts()).dead
        report.archive_paused = (await store.archive_state()).paused_reason
        by_key = {(s.provider, s.call_id): s for s in rig.scripts}
        for call in await store.list_calls(limit=len(rig.scripts) + 10, include_terminal=True):
            script = by_key[(call.provider, call.call_id)]
            for rec in call.recordings:
                report.recordings_expected += 1
                if rec.status in ("failed", "archive_failed"):
                    report.recordings_reported_failed += 1
                    continue
                if rec.status != "archived" or rec.archive_path is None:
                    report.recordings_missing += 1
                    continue
                source = (script.recording(rec.id) if call.provider == "apifycloud"
                          else script.recordings[0])
                want = expected_sha256(source) if source is not None else "no such recording"
                if rec.archive_sha256 != want:
                    report.recordings_corrupt += 1
                else:
                    archived[rec.archive_path] = want
    finally:
        await store.close()
    if rig.bucket is not None:
        await _check_bucket(rig.bucket, rig.scripts, archived, report)
    elif rig.archive_dir is not None:
        _check_folder(rig.archive_dir, archived, report)


def _check_folder(archive: Path, archived: dict[str, str], report: SoakReport) -> None:
    referenced = set()
    for relative, want in archived.items():
        path = archive / relative
        referenced.add(path.resolve())
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        if not digest:
            report.recordings_missing += 1
        elif digest != want:
            report.recordings_corrupt += 1
        else:
            report.recordings_archived += 1
    for path in archive.rglob("*"):
        if path.is_file() and path.resolve() not in referenced and ".partial" not in path.parts \
                and path.name != "ballast":
            report.stray_files += 1
            if len(report.stray_paths) < 20:
                report.stray_paths.append(str(path.relative_to(archive)))


async def _check_bucket(bucket: Bucket, scripts: list[CallScript], archived: dict[str, str],
                        report: SoakReport) -> None:
    """Read every object back through a plain S3 GET (boto3, not callwatch's client)."""
    keys = {f"{bucket.prefix}/{path}": want for path, want in archived.items()}
    whole = {expected_sha256(r) for s in scripts for r in s.recordings}
    verdict: BucketVerdict = await anyio.to_thread.run_sync(
        lambda: inspect_bucket(bucket, keys, whole))
    for key, want in keys.items():
        got = verdict.digests.get(key)
        if got is None:
            report.recordings_missing += 1
        elif got != want:
            report.recordings_corrupt += 1
        else:
            report.recordings_archived += 1
    report.s3_objects_checked = verdict.objects_checked
    report.s3_partial_objects = verdict.partial_objects
    report.stray_files = verdict.stray_objects
    report.stray_paths = verdict.stray_keys
    report.s3_unfinished_uploads = verdict.unfinished_uploads
    report.s3_scratch_objects = verdict.scratch_objects


def judge(report: SoakReport) -> None:
    checks = {
        "events missing": report.events_missing,
        "calls without exactly one terminal event (last)": report.calls_without_one_terminal,
        "calls delivered out of order": report.out_of_order_calls,
        "events twice in the outbox": report.outbox_duplicates,
        "bad signatures": report.bad_signatures,
        "recordings corrupt": report.recordings_corrupt,
        "recordings missing": report.recordings_missing,
        "stray files in the archive": report.stray_files,
        "partial objects under final keys": report.s3_partial_objects,
        "unfinished multipart uploads after shutdown": report.s3_unfinished_uploads,
        "scratch objects after shutdown": report.s3_scratch_objects,
        "workers not stopping cleanly": len(report.unclean_exits),
    }
    if report.workers > 1:  # the promise of several workers (issue 13); reported for one too
        checks["calls polled by two workers at once"] = len(report.paths_polled_at_once)
    report.problems = [f"{name}: {n}" for name, n in checks.items() if n]
    if report.integrity != "ok":
        report.problems.append(f"integrity_check: {report.integrity}")


async def feed(rig: Rig, spread: float) -> None:
    """Track batch ``w >= 1`` at ``w * spread / waves`` seconds into the chaos (when the
    simulator created it; batch 0 is tracked before the workers start)."""
    started = time.monotonic()
    for wave, batch in enumerate(rig.batches[1:], start=1):
        await anyio.sleep(max(0.0, started + wave * spread / len(rig.batches)
                              - time.monotonic()))
        await track_all(rig.database, batch)


async def track_all(database: Path | str, scripts: list[CallScript]) -> None:
    store = await open_store(database)
    try:
        await store.track_many([(NewCall(provider=s.provider, call_id=s.call_id,
                                         metadata={"soak": True}), time.time())
                                for s in scripts])
    finally:
        await store.close()


def configure(workdir: Path, sim: Simulator, args: argparse.Namespace, database: Path | str,
              bucket: Bucket | None) -> list[DaemonUnderTest]:
    """One config for every worker (one database, one archive); a work folder (log) each."""
    extra = "[archive]\nconcurrency = 4\nmax_attempts = 50\n"
    s3_env: dict[str, str] = {}
    if bucket is not None:
        section, s3_env = bucket.config()
        extra += "\n" + section
    # Hundreds of kills take minutes: no call may hit max_tracking_age meanwhile.
    tracking = {**FAST_TRACKING, "max_tracking_age": 7200}
    config, env = write_config(workdir, sim, archive=bucket is None, extra=extra,
                               tracking=tracking)
    text = config.read_text().replace("retry_schedule = [0.5, 1, 2, 4]",
                                      f"retry_schedule = {RETRY_SCHEDULE}", 1)
    if isinstance(database, str):
        text = text.replace('database = "callwatch.db"',
                            f'database = "{database}"\nlease_seconds = {args.lease_seconds}', 1)
    if bucket is not None:
        text = text.replace("[worker]\n", f'[worker]\narchive = "{bucket.url}"\n', 1)
    config.write_text(text)
    env = {**env, **s3_env}
    if args.workers == 1:
        return [DaemonUnderTest(config=config, env=env, workdir=workdir)]
    folders = [workdir / f"w{n}" for n in range(args.workers)]
    for folder in folders:
        folder.mkdir()
    return [DaemonUnderTest(config=config, env=env, workdir=folder) for folder in folders]


@contextlib.asynccontextmanager
async def database_for(args: argparse.Namespace, workdir: Path) -> AsyncIterator[Path | str]:
    if args.database == "sqlite":
        yield workdir / "callwatch.db"
        return
    async with fresh_database(args.database, keep=args.keep) as url:
        if args.keep:
            print(f"database kept: {url}")
        yield url


@contextlib.contextmanager
def bucket_for(args: argparse.Namespace) -> Iterator[Bucket | None]:
    if args.archive != "s3":
        yield None
        return
    with running_s3_server() as server:
        yield Bucket(server=server, name=server.bucket())


@contextlib.asynccontextmanager
async def soak_setup(args: argparse.Namespace, workdir: Path) -> AsyncIterator[Rig]:
    rng = random.Random(args.seed)
    world = World()
    async with run_simulator(world, link_ttl=args.link_ttl, seed=args.seed) as sim, \
            database_for(args, workdir) as database:
        batches = make_calls(world, args.calls, rng, big=args.archive == "s3",
                             waves=args.waves, spread=args.chaos_seconds)
        with bucket_for(args) as bucket:
            workers = configure(workdir, sim, args, database, bucket)
            rig = Rig(sim=sim, workers=workers, database=database, batches=batches,
                      bucket=bucket)
            if bucket is not None:
                yield rig
                return
            rig.archive_dir = workdir / "recordings"
            args.disk_mb = args.disk_mb or disk_mb_for(rig.scripts)
            with small_disk(rig.archive_dir, args.disk_mb) as rig.mounted:
                yield rig


async def stop_all(rig: Rig, report: SoakReport) -> None:
    """SIGTERM every worker at once: a clean shutdown, each must exit 0."""
    codes: list[int] = []

    async def stop(worker: DaemonUnderTest) -> None:
        codes.append(await worker.stop())

    async with anyio.create_task_group() as tg:
        for worker in rig.workers:
            tg.start_soon(stop, worker)
    report.unclean_exits = [c for c in codes if c != 0]


async def run(args: argparse.Namespace) -> SoakReport:
    report = SoakReport(calls=args.calls, workers=args.workers, archive=args.archive,
                        database="sqlite" if args.database == "sqlite" else "postgresql")
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="callwatch-soak-"))
    try:
        async with soak_setup(args, workdir) as rig:
            if rig.archive_dir is not None:
                report.disk_fill = (f"tmpfs {args.disk_mb} MiB" if rig.mounted
                                    else "off (cannot mount)")
            await track_all(rig.database, rig.batches[0])  # migrates a new database first
            for worker in rig.workers:  # at once
                worker.start()
            for worker in rig.workers:
                await worker.wait_ready(30)
            async with anyio.create_task_group() as tg:
                tg.start_soon(feed, rig, args.chaos_seconds)
                await chaos(rig, args, rng=random.Random(args.seed + 1), report=report)
            await settle(rig, args.settle_seconds)
            await stop_all(rig, report)
            events = await read_events(rig.database)
            check_deliveries(events, rig.sim, rig.workers[0].env["SIM_WEBHOOK_SECRET"], report)
            check_polls(rig.sim, report)
            report.pauses = count_pauses(rig.workers)
            await check_archive(rig, report)
            if args.keep:
                print(f"workdir kept: {workdir}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report.seconds = round(time.monotonic() - started, 1)
    judge(report)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--chaos-seconds", type=float, default=20.0)
    parser.add_argument("--settle-seconds", type=float, default=120.0)
    parser.add_argument("--link-ttl", type=int, default=4, help="signed link lifetime (s)")
    parser.add_argument("--disk-mb", type=int, default=0,
                        help="archive tmpfs size (default: room for every recording twice)")
    parser.add_argument("--database", default="sqlite",
                        help="'sqlite' (a file), or a postgresql:// URL of a server (a role "
                             "that may create databases): a fresh database is made there")
    parser.add_argument("--workers", type=int, default=1,
                        help="callwatch run processes on the database (PostgreSQL for >1)")
    parser.add_argument("--lease-seconds", type=float, default=5.0,
                        help="[worker] lease_seconds on PostgreSQL")
    parser.add_argument("--archive", choices=("folder", "s3"), default="folder",
                        help="folder (a tmpfs) or s3 (a moto server on loopback)")
    parser.add_argument("--waves", type=int, default=1,
                        help="track the calls in this many batches spread over the chaos "
                             "seconds (default: all at the start)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (and the PostgreSQL database)")
    parser.add_argument("--json", type=Path, default=Path("bench/results/soak.json"))
    args = parser.parse_args(argv)
    if args.database != "sqlite" and not args.database.startswith(("postgresql://",
                                                                   "postgres://")):
        parser.error("--database is 'sqlite' or a postgresql:// URL")
    if args.workers < 1 or (args.workers > 1 and args.database == "sqlite"):
        parser.error("--workers N > 1 needs --database postgresql://...")
    return args


def main(argv: list[str] | None = None) -> int:
    import logging

    from worker import logs

    args = parse_args(argv)
    logs.setup("warning")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server: a line per request
    report = anyio.run(run, args)
    table = {k: v for k, v in asdict(report).items() if k not in ("recovery_seconds",
                                                                  "problems", "faults")}
    for key, value in table.items():
        print(f"{key:<28}{value}")
    if report.recovery_seconds:
        rec = sorted(report.recovery_seconds)
        print(f"{'recovery after kill (s)':<28}median {rec[len(rec) // 2]}, max {rec[-1]}")
    print(f"{'faults injected':<28}{report.faults}")
    print("RESULT: " + ("OK, nothing lost" if report.ok else "; ".join(report.problems)))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({**asdict(report), "ok": report.ok}, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
