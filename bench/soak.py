"""Fault soak: kill it, starve it, feed it garbage - then check from outside that nothing is lost.

The real daemon runs as a subprocess against the simulator (in this process) while a chaos
loop SIGKILLs and restarts it, throws 429 storms and 5xx bursts at it, cuts and expires its
downloads, takes the webhook receiver down or makes it answer 500, and fills the archive disk
(a small tmpfs, when this process may mount one). Afterwards every promise is checked from the
outside - the receiver's log, the archive files and their digests, the database:

* every tracked call ends in exactly one terminal event;
* every event reaches the endpoint at least once (duplicates counted), signed, in order per call;
* every recording the simulator made available is archived intact, or reported failed.

Short run (CI):  python -m bench.soak --calls 60 --kills 3
Long run:        python -m bench.soak --calls 600 --kills 200 --chaos-seconds 240 --seed 21
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
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from tests.e2e.harness import DaemonUnderTest, read_events
from worker.demo import FAST_TRACKING, write_config
from worker.simulator import Fault, Simulator, World, expected_sha256, run_simulator
from worker.simulator.world import CallScript, RecordingScript
from worker.store.base import NewCall
from worker.store.sqlite import SQLiteStore

PROVIDERS = ("ultravox", "envoy", "apifycloud")
TERMINAL = ("call.completed", "call.tracking_failed")


@dataclass
class SoakReport:
    """What the soak found; ``ok`` only when every promise held."""

    calls: int = 0
    kills: int = 0
    events_expected: int = 0
    events_delivered: int = 0
    events_missing: int = 0
    duplicates_delivered: int = 0
    out_of_order_calls: int = 0
    bad_signatures: int = 0
    calls_without_one_terminal: int = 0
    recordings_expected: int = 0
    recordings_archived: int = 0
    recordings_reported_failed: int = 0
    recordings_corrupt: int = 0
    recordings_missing: int = 0
    stray_files: int = 0
    stray_paths: list[str] = field(default_factory=list)  # the first few, to look into
    archive_paused: str | None = None  # the archiver's pause reason when the run ended
    integrity: str = ""
    recovery_seconds: list[float] = field(default_factory=list)
    faults: dict[str, int] = field(default_factory=dict)
    disk_fill: str = "off"
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def make_calls(world: World, n: int, rng: random.Random) -> list[CallScript]:
    scripts = []
    for i in range(n):
        provider = PROVIDERS[i % 3]
        joins = rng.random() > 0.1
        recordings = [RecordingScript(ready_after=rng.uniform(0.2, 2.0),
                                      size=rng.choice([4096, 65536, 300_000]),
                                      fails=rng.random() < 0.1)
                      for _ in range(1 if provider != "apifycloud" else rng.randint(0, 2))]
        scripts.append(world.add_call(
            provider, starts_after=rng.uniform(0.2, 3.0) if joins else None,
            lasts=rng.uniform(1.0, 8.0), join_timeout=4.0,
            recordings=recordings if joins else ()))
    return scripts


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


async def chaos(sim: Simulator, daemon: DaemonUnderTest, args: argparse.Namespace, *,
                rng: random.Random, report: SoakReport, ballast: Path | None) -> None:
    """Kill, restart and break things: every fault at least once, then at random until the
    kills are spent and the time is up."""
    plan = ["kill"] * args.kills + list(FAULTS)
    rng.shuffle(plan)
    deadline = time.monotonic() + args.chaos_seconds
    while plan or time.monotonic() < deadline:
        await anyio.sleep(rng.uniform(0.3, 1.5))
        action = plan.pop() if plan else rng.choice(FAULTS)
        report.faults[action] = report.faults.get(action, 0) + 1
        if action == "kill":
            daemon.kill()
            report.kills += 1
            daemon.start()
            started = time.monotonic()
            await daemon.wait_ready(30)
            report.recovery_seconds.append(round(time.monotonic() - started, 3))
        else:
            await inject(action, sim, rng, ballast)
    for faults in sim.faults.values():
        faults.clear()
    sim.sink.behave(fail_next=0)
    if ballast is not None and ballast.exists():
        ballast.unlink()


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


async def settle(daemon: DaemonUnderTest, sim: Simulator, n_calls: int,
                 timeout: float) -> None:
    """Wait until every call is terminal and the receiver has every event at least once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = await read_events(daemon.db)
        terminal = {(e.provider, e.call_id) for e in events if e.type in TERMINAL}
        received = {r.header("webhook-id") for r in sim.sink.requests if r.status < 300}
        if len(terminal) >= n_calls and all(e.id in received for e in events):
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


async def check_archive(db: Path, archive: Path, scripts: list[CallScript],
                        report: SoakReport) -> None:
    store = await SQLiteStore.open(db)
    try:
        report.integrity = await store.integrity_check()
        report.archive_paused = (await store.archive_state()).paused_reason
        by_key = {(s.provider, s.call_id): s for s in scripts}
        referenced = set()
        for call in await store.list_calls(limit=len(scripts) + 10, include_terminal=True):
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
                path = archive / rec.archive_path
                referenced.add(path.resolve())
                digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
                if source is None or digest != expected_sha256(source) or \
                        digest != rec.archive_sha256:
                    report.recordings_corrupt += 1
                else:
                    report.recordings_archived += 1
    finally:
        await store.close()
    for path in archive.rglob("*"):
        if path.is_file() and path.resolve() not in referenced and ".partial" not in path.parts \
                and path.name != "ballast":
            report.stray_files += 1
            if len(report.stray_paths) < 20:
                report.stray_paths.append(str(path.relative_to(archive)))


def judge(report: SoakReport) -> None:
    checks = {
        "events missing": report.events_missing,
        "calls without exactly one terminal event (last)": report.calls_without_one_terminal,
        "calls delivered out of order": report.out_of_order_calls,
        "bad signatures": report.bad_signatures,
        "recordings corrupt": report.recordings_corrupt,
        "recordings missing": report.recordings_missing,
        "stray files in the archive": report.stray_files,
    }
    report.problems = [f"{name}: {n}" for name, n in checks.items() if n]
    if report.integrity != "ok":
        report.problems.append(f"integrity_check: {report.integrity}")


async def track_all(db: Path, scripts: list[CallScript]) -> None:
    store = await SQLiteStore.open(db)
    try:
        for script in scripts:
            await store.track(NewCall(provider=script.provider, call_id=script.call_id,
                                      metadata={"soak": True}), time.time())
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def soak_setup(args: argparse.Namespace, workdir: Path
                     ) -> AsyncIterator[tuple[Simulator, DaemonUnderTest, Path, bool,
                                              list[CallScript]]]:
    rng = random.Random(args.seed)
    world = World()
    async with run_simulator(world, link_ttl=args.link_ttl, seed=args.seed) as sim:
        archive = workdir / "recordings"
        scripts = make_calls(world, args.calls, rng)
        args.disk_mb = args.disk_mb or disk_mb_for(scripts)
        with small_disk(archive, args.disk_mb) as mounted:
            extra = "[archive]\nconcurrency = 4\nmax_attempts = 50\n"
            # Hundreds of kills take minutes: no call may hit max_tracking_age meanwhile.
            tracking = {**FAST_TRACKING, "max_tracking_age": 7200}
            config, env = write_config(workdir, sim, extra=extra, tracking=tracking)
            daemon = DaemonUnderTest(config=config, env=env, workdir=workdir)
            yield sim, daemon, archive, mounted, scripts


async def run(args: argparse.Namespace) -> SoakReport:
    report = SoakReport(calls=args.calls)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="callwatch-soak-"))
    try:
        async with soak_setup(args, workdir) as (sim, daemon, archive, mounted, scripts):
            report.disk_fill = f"tmpfs {args.disk_mb} MiB" if mounted else "off (cannot mount)"
            await track_all(daemon.db, scripts)
            daemon.start()
            await daemon.wait_ready(30)
            await chaos(sim, daemon, args, rng=random.Random(args.seed + 1), report=report,
                        ballast=archive / "ballast" if mounted else None)
            await settle(daemon, sim, len(scripts), args.settle_seconds)
            await daemon.stop()
            events = await read_events(daemon.db)
            check_deliveries(events, sim, daemon.env["SIM_WEBHOOK_SECRET"], report)
            await check_archive(daemon.db, archive, scripts, report)
            if args.keep:
                print(f"workdir kept: {workdir}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report.seconds = round(time.monotonic() - started, 1)
    judge(report)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--chaos-seconds", type=float, default=20.0)
    parser.add_argument("--settle-seconds", type=float, default=120.0)
    parser.add_argument("--link-ttl", type=int, default=4, help="signed link lifetime (s)")
    parser.add_argument("--disk-mb", type=int, default=0,
                        help="archive tmpfs size (default: room for every recording twice)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", type=Path, default=Path("bench/results/soak.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from worker import logs

    args = parse_args(argv)
    logs.setup("warning")
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
