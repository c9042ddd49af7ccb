"""``python -m bench.archive_s3``: callwatch's S3 target next to a bare obstore upload.

Everything on loopback: moto's S3 server (``python -m moto.server``) in a process of its own,
and each measured upload in a fresh process of its own (its peak RSS is its ``VmHWM``). Per
size, ``--rounds`` rounds; each round runs, for every part configuration of ``--parts`` (their
order rotated every round), these two (their order flipped every round):

- ``bare``: obstore's multipart ``put_async`` of the bytes from an async iterator of 1 MiB
  blocks, nothing hashed, nothing copied: the ceiling for the library against this server;
- ``target``: worker/archive/s3.py's ``S3Target`` fed the same bytes the way the downloader
  feeds it (batches of 16 x 64 KiB chunks), then ``commit``. Its time is split in two:
  *upload* (hashing and streaming to the scratch key, until the multipart upload completed)
  and *copy+verify* (everything ``commit`` asks of S3 after that: HEAD, the server-side copy
  to the final key with the digest, HEAD, delete of the scratch key), each S3 call timed;
  *start* (the listing of an earlier attempt's scratch) is reported apart.

Medians are reported; ``upload / bare`` is the figure for our stream (same bytes, same library,
same server, same run), ``copy+verify`` is what the commit protocol adds. The final object is
read back with a plain GET and hashed: a wrong byte fails the benchmark.

``--daemon`` adds one end-to-end run of the daemon per size (download from the simulator,
archive to moto): its ``recording.archived`` seconds and its peak RSS. Writes
``bench/results/archive_s3.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from bench.archive import MIB, ROOT, PeakRss, Simulator, _wait_for_line

RESULTS = ROOT / "bench" / "results" / "archive_s3.json"
KEY_ID, SECRET = "AKIABENCH", "bench-secret"  # moto takes any pair
BLOCK = random.Random(14).randbytes(MIB)  # the same in every process: the digest is known
READ = 64 * 1024  # the size of the chunks httpx hands the downloader


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Moto:
    """moto's S3 server in a process of its own."""

    def __init__(self, workdir: Path) -> None:
        port = _free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL, stderr=(workdir / "moto.log").open("wb"))
        import boto3  # dev only

        self.client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                                   aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.create_bucket(Bucket="bench")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def digest(self, key: str) -> str:
        body = self.client.get_object(Bucket="bench", Key=key)["Body"]
        digest = hashlib.sha256()
        while chunk := body.read(MIB):
            digest.update(chunk)
        return digest.hexdigest()

    def clear(self) -> None:
        for obj in self.client.list_objects_v2(Bucket="bench").get("Contents", []):
            self.client.delete_object(Bucket="bench", Key=obj["Key"])

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


def expected_digest(size: int) -> str:
    digest = hashlib.sha256()
    for _ in range(size // MIB):
        digest.update(BLOCK)
    return digest.hexdigest()


# ----------------------------------------------------------------- the children


def _fresh() -> bytes:
    """A new copy of BLOCK: the bytes of a real download are new memory every time (handing
    obstore the same object again and again would let it skip copies a real upload makes)."""
    return bytes(bytearray(BLOCK))


def _batch() -> list[bytes]:
    """One downloader batch: 16 new 64 KiB chunks."""
    block = _fresh()
    return [block[i:i + READ] for i in range(0, MIB, READ)]


def _cpu(pid: int | None = None) -> float:
    """CPU seconds (user + system, all threads) of ``pid``, or of this process."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _blocks(size: int) -> AsyncIterator[bytes]:
    for _ in range(size // MIB):
        yield _fresh()


def child_bare(endpoint: str, size: int, part: int, concurrency: int,
               moto_pid: int) -> dict[str, Any]:
    import obstore
    from obstore.store import S3Store

    store = S3Store("bench", config={
        "endpoint": endpoint, "region": "us-east-1", "access_key_id": KEY_ID,
        "secret_access_key": SECRET, "virtual_hosted_style_request": False,
        "checksum_algorithm": "SHA256"},
        # the target's own client options: obstore's default 30 s timeout trips on a loaded
        # moto completing a 1 GiB upload, and the bare upload must get the same patience
        client_options={"allow_http": True, "timeout": "120s", "connect_timeout": "10s"})

    async def upload() -> None:
        await obstore.put_async(store, "bare/obstore", _blocks(size), use_multipart=True,
                                chunk_size=part, max_concurrency=concurrency)

    cpu, moto_cpu, started = _cpu(), _cpu(moto_pid), time.perf_counter()
    asyncio.run(upload())
    return {"seconds": time.perf_counter() - started, "cpu_s": _cpu() - cpu,
            "moto_cpu_s": _cpu(moto_pid) - moto_cpu}


class _TimedRest:
    """Wraps the target's S3Rest: records (name, start, end) of every call."""

    def __init__(self, rest: Any) -> None:
        self._rest = rest
        self.calls: list[tuple[str, float, float]] = []
        self.on_call: Callable[[], object] = lambda: None

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._rest, name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            self.on_call()
            started = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                self.calls.append((name, started, time.perf_counter()))
        return timed


def child_target(endpoint: str, size: int, part: int, concurrency: int,
                 moto_pid: int) -> dict[str, Any]:
    from worker.archive import s3
    from worker.config_sections import S3Config
    from worker.secrets import Secret

    s3.CHUNK, s3.CONCURRENCY = part, concurrency
    config = S3Config(bucket="bench", prefix="rec", region="us-east-1", endpoint_url=endpoint,
                      access_key_id=Secret(KEY_ID), secret_access_key=Secret(SECRET))

    async def run() -> dict[str, Any]:
        target = s3.S3Target(config, stale_after=3600)
        rest = _TimedRest(target.rest)
        target.rest = rest  # type: ignore[assignment]  # timing only
        started = time.perf_counter()
        upload = await target.start("bench")
        begun, cpu, moto_cpu = time.perf_counter(), _cpu(), _cpu(moto_pid)
        for _ in range(size // MIB):
            await upload.write(_batch())
        written = time.perf_counter()
        rest.on_call = lambda: marks.setdefault("uploaded", (_cpu(), _cpu(moto_pid)))
        await upload.commit(PurePosixPath("final.bin"), "audio/wav")
        ended, cpu_end, moto_end = time.perf_counter(), _cpu(), _cpu(moto_pid)
        await target.close()
        after = [c for c in rest.calls if c[1] >= written]
        uploaded = after[0][1] if after else ended  # commit's first S3 call: the HEAD
        cpu_up, moto_up = marks["uploaded"]
        phases: dict[str, float] = {}
        for name, first, last in after:
            phases[name] = phases.get(name, 0.0) + last - first
        return {"seconds": ended - started, "start_s": begun - started,
                "upload_s": uploaded - begun, "copy_verify_s": ended - uploaded,
                "calls": phases, "sha256": upload.sha256,
                "upload_cpu_s": cpu_up - cpu, "copy_verify_cpu_s": cpu_end - cpu_up,
                "moto_upload_cpu_s": moto_up - moto_cpu, "moto_copy_verify_cpu_s":
                moto_end - moto_up}

    marks: dict[str, tuple[float, float]] = {}

    return asyncio.run(run())


def run_child(kind: str, moto: Moto, size: int, part: int, concurrency: int, *,
              old: Path | None = None) -> dict[str, Any]:
    """One upload in a fresh process: its figures and its peak RSS. With ``old`` (a folder
    holding another version's ``worker`` package) the target is that version's."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)} if old else None
    proc = subprocess.Popen([sys.executable, "-m", "bench.archive_s3", "--child", kind,
                             "--endpoint", moto.endpoint, "--moto-pid", str(moto.proc.pid),
                             "--sizes", str(size // MIB),
                             "--parts", f"{part // MIB}x{concurrency}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=old, env=env)
    rss = PeakRss(proc.pid)
    out, err = proc.communicate(timeout=1800)
    peak = rss.stop()
    if proc.returncode != 0:
        tail = [line for line in err.decode(errors="replace").splitlines()
                if "Error" in line or "error" in line][-3:]
        raise RuntimeError(f"{kind} upload failed ({proc.returncode}): {tail}")
    found: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    found["peak_rss_mib"] = round(peak / 1024, 1)
    return found


# ----------------------------------------------------------------- the daemon


def daemon_run(sim: Simulator, moto: Moto, size: int, workdir: Path) -> dict[str, Any]:
    call_id, recording_id = sim.add_recording(size, seed=size // MIB)
    config = workdir / "callwatch.toml"
    config.write_text("\n".join([
        "[worker]", 'database = "callwatch.db"', 'archive = "s3://bench/rec"',
        "[tracking]", "poll_interval = 0.2", "pending_poll_interval = 0.2",
        "recording_poll_interval = 0.2",
        "[providers.envoy]", f'base_url = "{sim.info["base_urls"]["envoy"]}"',
        'api_key_env = "BENCH_ENVOY_KEY"', "[archive]", "timeout = 60",
        "[archive.s3]", f'endpoint_url = "{moto.endpoint}"', 'region = "us-east-1"',
        'access_key_id_env = "BENCH_S3_KEY"', 'secret_access_key_env = "BENCH_S3_SECRET"', ""]))
    env = {**os.environ, "BENCH_ENVOY_KEY": sim.info["api_keys"]["envoy"],
           "BENCH_S3_KEY": KEY_ID, "BENCH_S3_SECRET": SECRET}
    base = [sys.executable, "-m", "worker", "--config", str(config)]
    subprocess.run([*base, "track", "envoy", call_id], check=True, env=env)
    log_path = workdir / "daemon.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([*base, "run"], env=env, stdout=log, stderr=subprocess.STDOUT)
    rss = PeakRss(proc.pid)
    try:
        archived = _wait_for_line(log_path, proc, "recording.archived")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        peak = rss.stop()
    expected = sim.digest(call_id, recording_id)
    if archived["sha256"] != expected or moto.digest(f"rec/{archived['path']}") != expected:
        raise RuntimeError("the daemon archived other bytes than the recording's")
    return {"seconds": float(archived["seconds"]), "peak_rss_mib": round(peak / 1024, 1)}


# ----------------------------------------------------------------- the rounds


def _median(rows: Sequence[dict[str, Any]], key: str) -> float:
    return round(statistics.median(float(r[key]) for r in rows), 3)


class _Row:
    """The runs of one part configuration at one size."""

    def __init__(self, size: int, part: int, concurrency: int) -> None:
        self.size, self.part, self.concurrency = size, part, concurrency
        self.bare: list[dict[str, Any]] = []
        self.ours: list[dict[str, Any]] = []
        self.before: list[dict[str, Any]] = []

    def steps(self, moto: Moto, old: Path | None) -> list[Callable[[], None]]:
        expected = expected_digest(self.size)
        shape = (self.size, self.part, self.concurrency)

        def target(into: list[dict[str, Any]], version: Path | None) -> Callable[[], None]:
            def step() -> None:
                run = run_child("target", moto, *shape, old=version)
                if run["sha256"] != expected or moto.digest("rec/final.bin") != expected:
                    raise RuntimeError("the target stored other bytes than it was given")
                into.append(run)
            return step

        steps = [lambda: self.bare.append(run_child("bare", moto, *shape)),
                 target(self.ours, None)]
        return [*steps, target(self.before, old)] if old is not None else steps

    def show(self, number: int) -> None:
        bare, got = self.bare[-1], self.ours[-1]
        print(f"  {self.size // MIB} MiB {self.part // MIB} MiB x {self.concurrency} round "
              f"{number + 1}: bare {bare['seconds']:.2f}s ({bare['peak_rss_mib']} MiB), target "
              f"{got['seconds']:.2f}s = start {got['start_s']:.2f}s + upload "
              f"{got['upload_s']:.2f}s + copy+verify "
              f"{got['copy_verify_s']:.2f}s {_calls(got['calls'])} ({got['peak_rss_mib']} MiB)"
              f"; CPU s client/moto: bare {bare['cpu_s']:.2f}/{bare['moto_cpu_s']:.2f}, "
              f"upload {got['upload_cpu_s']:.2f}/{got['moto_upload_cpu_s']:.2f}, copy+verify "
              f"{got['copy_verify_cpu_s']:.2f}/{got['moto_copy_verify_cpu_s']:.2f}", flush=True)
        if self.before:
            old = self.before[-1]
            print(f"    old target: upload {old['upload_s']:.2f}s, CPU s client/moto "
                  f"{old['upload_cpu_s']:.2f}/{old['moto_upload_cpu_s']:.2f} "
                  f"({old['peak_rss_mib']} MiB)", flush=True)

    def summary(self) -> dict[str, Any]:
        bare, ours, before = self.bare, self.ours, self.before
        bare_s = _median(bare, "seconds")
        found: dict[str, Any] = {}
        if before:
            found["old"] = {
                "upload_s": _median(before, "upload_s"),
                "upload_cpu_s": _median(before, "upload_cpu_s"),
                "moto_upload_cpu_s": _median(before, "moto_upload_cpu_s"),
                "new_vs_old_upload": round(statistics.median(
                    o["upload_s"] / n["upload_s"] for o, n in zip(before, ours, strict=True)),
                    3),
                "peak_rss_mib": max(r["peak_rss_mib"] for r in before)}
        return found | {
            "size_mib": self.size // MIB, "part_mib": self.part // MIB,
            "concurrency": self.concurrency, "rounds": len(ours), "bare_s": bare_s,
            "bare_mib_s": round(self.size / MIB / bare_s, 1),
            "start_s": _median(ours, "start_s"), "upload_s": _median(ours, "upload_s"),
            "copy_verify_s": _median(ours, "copy_verify_s"), "target_s": _median(ours, "seconds"),
            "copy_s": round(statistics.median(r["calls"].get("copy", 0.0) for r in ours), 3),
            "upload_vs_bare": round(statistics.median(
                b["seconds"] / r["upload_s"] for b, r in zip(bare, ours, strict=True)), 3),
            "target_vs_bare": round(statistics.median(
                b["seconds"] / r["seconds"] for b, r in zip(bare, ours, strict=True)), 3),
            "cpu_s": {"bare": _median(bare, "cpu_s"), "upload": _median(ours, "upload_cpu_s"),
                      "copy_verify": _median(ours, "copy_verify_cpu_s"),
                      "moto_bare": _median(bare, "moto_cpu_s"),
                      "moto_upload": _median(ours, "moto_upload_cpu_s"),
                      "moto_copy_verify": _median(ours, "moto_copy_verify_cpu_s")},
            "bare_peak_rss_mib": max(r["peak_rss_mib"] for r in bare),
            "target_peak_rss_mib": max(r["peak_rss_mib"] for r in ours)}


def measure(moto: Moto, size: int, configs: Sequence[tuple[int, int]], *,
            rounds: int, old: Path | None) -> list[dict[str, Any]]:
    """``rounds`` rounds; in each, every configuration's bare upload and target (and the old
    target) run in turn, the order of configurations rotated and of the runs flipped every
    round so that no one is always first after a quiet or busy spell. Medians."""
    rows = [_Row(size, part, concurrency) for part, concurrency in configs]
    for number in range(rounds):
        for row in rows[number % len(rows):] + rows[:number % len(rows)]:
            steps = row.steps(moto, old)
            for step in steps if number % 2 == 0 else steps[::-1]:
                step()
                moto.clear()
            row.show(number)
    return [row.summary() for row in rows]


def _calls(calls: dict[str, float]) -> str:
    return "[" + ", ".join(f"{k} {v:.2f}s" for k, v in calls.items()) + "]"


def _parts(text: str) -> list[tuple[int, int]]:
    found = []
    for item in text.split(","):
        part, _, concurrency = item.partition("x")
        found.append((int(part) * MIB, int(concurrency)))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.archive_s3", description=__doc__)
    parser.add_argument("--sizes", default="256,1024", help="object sizes in MiB")
    parser.add_argument("--rounds", "--reps", type=int, default=3,
                        help="alternated rounds per row")
    parser.add_argument("--parts", default="",
                        help="part MiB x parts in flight, e.g. 5x3,16x4 (default: the "
                             "target's own CHUNK and CONCURRENCY)")
    parser.add_argument("--daemon", action="store_true",
                        help="also one end-to-end daemon run per size (peak RSS)")
    parser.add_argument("--old", type=Path,
                        help="a folder with another version's worker package (e.g. from "
                             "git archive): its target joins every round, for before/after")
    parser.add_argument("--child", choices=["bare", "target"], help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--moto-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = [int(s) * MIB for s in args.sizes.split(",")]
    if args.parts:
        configs = _parts(args.parts)
    else:
        from worker.archive import s3

        configs = [(s3.CHUNK, s3.CONCURRENCY)]
    if args.child:
        child: Callable[[str, int, int, int, int], dict[str, Any]] = (
            child_bare if args.child == "bare" else child_target)
        print(json.dumps(child(args.endpoint, sizes[0], *configs[0], args.moto_pid)),
              flush=True)
        # obstore's runtime sometimes aborts (SIGABRT) while a throwaway process tears
        # down after asyncio.run(); the figure is out by then, so leave without teardown.
        os._exit(0)
    rows: list[dict[str, Any]] = []
    daemon: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="callwatch-bench-s3-") as tmp:
        moto = Moto(Path(tmp))
        try:
            for size in sizes:
                rows.extend(measure(moto, size, configs, rounds=args.rounds,
                                    old=args.old and args.old.resolve()))
            if args.daemon:
                sim = Simulator(Path(tmp))
                try:
                    for size in sizes:
                        workdir = Path(tempfile.mkdtemp(dir=tmp))
                        run = daemon_run(sim, moto, size, workdir)
                        shutil.rmtree(workdir, ignore_errors=True)
                        moto.clear()
                        print(f"  daemon {size // MIB} MiB: {run['seconds']:.2f}s, peak RSS "
                              f"{run['peak_rss_mib']} MiB", flush=True)
                        daemon.append({"size_mib": size // MIB, **run})
                finally:
                    sim.close()
        finally:
            moto.close()
    print(json.dumps({"rows": rows, "daemon": daemon}, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"cpus": os.cpu_count(), "rounds": args.rounds, "rows": rows,
                                   "daemon": daemon}, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
