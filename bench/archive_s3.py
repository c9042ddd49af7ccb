"""``python -m bench.archive_s3``: archiving a big recording to S3, next to bare uploads.

Everything on loopback, each part in its own process: moto's S3 server
(``python -m moto.server``), the simulator, and per size, alternated in one run:

- ``obstore bare``: obstore's multipart ``put_async`` of the same number of bytes from an async
  iterator (1 MiB chunks, the target's part size and concurrency), nothing downloaded or hashed:
  the ceiling for the library against this server;
- ``boto3 bare``: boto3's ``upload_fileobj`` of the same bytes from a stream, same part size and
  concurrency (aiobotocore, the issue's other candidate, is not in the lock file: boto3 is the
  botocore-based client that is, through moto);
- the daemon with ``archive = "s3://..."``: the ``seconds`` of its ``recording.archived`` line
  (download from the simulator, sha256, streamed upload to a scratch key, length check,
  server-side copy with the digest, HEAD check, delete) and its peak RSS (``VmHWM``).

Each bare uploader also reports its own peak RSS. The daemon's object is read back and hashed:
a wrong byte fails the benchmark. Writes ``bench/results/archive_s3.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from bench.archive import MIB, ROOT, PeakRss, Simulator, _wait_for_line

RESULTS = ROOT / "bench" / "results" / "archive_s3.json"
KEY_ID, SECRET = "AKIABENCH", "bench-secret"  # moto takes any pair
CHUNK = 5 * MIB
CONCURRENCY = 3
BLOCK = os.urandom(MIB)


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

    def clear(self) -> None:
        for obj in self.client.list_objects_v2(Bucket="bench").get("Contents", []):
            self.client.delete_object(Bucket="bench", Key=obj["Key"])

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


# ----------------------------------------------------------------- the bare uploaders


async def _blocks(size: int) -> AsyncIterator[bytes]:
    for _ in range(size // MIB):
        yield BLOCK


def bare_obstore(endpoint: str, size: int) -> float:
    import obstore
    from obstore.store import S3Store

    store = S3Store("bench", config={
        "endpoint": endpoint, "region": "us-east-1", "access_key_id": KEY_ID,
        "secret_access_key": SECRET, "virtual_hosted_style_request": False,
        "checksum_algorithm": "SHA256"}, client_options={"allow_http": True})
    async def upload() -> None:
        await obstore.put_async(store, "bare/obstore", _blocks(size), use_multipart=True,
                                chunk_size=CHUNK, max_concurrency=CONCURRENCY)

    started = time.perf_counter()
    asyncio.run(upload())
    return time.perf_counter() - started


class _Stream(io.RawIOBase):
    """``size`` bytes, read as a stream (never all in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left, MIB)
        buffer[:n] = BLOCK[:n]
        self.left -= n
        return n


def bare_boto3(endpoint: str, size: int) -> float:
    import boto3
    from boto3.s3.transfer import TransferConfig

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
    config = TransferConfig(multipart_chunksize=CHUNK, max_concurrency=CONCURRENCY)
    started = time.perf_counter()
    client.upload_fileobj(io.BufferedReader(_Stream(size), MIB), "bench", "bare/boto3",
                          Config=config)
    return time.perf_counter() - started


def run_bare(kind: str, endpoint: str, size: int) -> dict[str, float]:
    """One bare upload in a fresh process: its seconds and its peak RSS."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.archive_s3", "--bare", kind,
                             "--endpoint", endpoint, "--sizes", str(size // MIB)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rss = PeakRss(proc.pid)
    out, err = proc.communicate(timeout=900)
    peak = rss.stop()
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"bare {kind} upload failed ({proc.returncode}): {tail}")
    return {"seconds": float(out.decode().strip()), "peak_rss_mib": round(peak / 1024, 1)}


# ----------------------------------------------------------------- the daemon


def daemon_run(sim: Simulator, moto: Moto, call_id: str, workdir: Path) -> dict[str, Any]:
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
    archived["peak_rss_mib"] = round(peak / 1024, 1)
    return archived


def read_back(moto: Moto, path: str) -> str:
    body = moto.client.get_object(Bucket="bench", Key=f"rec/{path}")["Body"]
    digest = hashlib.sha256()
    while chunk := body.read(MIB):
        digest.update(chunk)
    return digest.hexdigest()


def measure(sim: Simulator, moto: Moto, size: int, reps: int, scratch: Path) -> dict[str, Any]:
    """Best of ``reps`` alternated runs of obstore bare, boto3 bare and the daemon."""
    obs, boto, runs = [], [], []
    for rep in range(reps):
        call_id, recording_id = sim.add_recording(size, seed=size // MIB * 100 + rep)
        workdir = Path(tempfile.mkdtemp(dir=scratch))
        try:
            obs.append(run_bare("obstore", moto.endpoint, size))
            boto.append(run_bare("boto3", moto.endpoint, size))
            run = daemon_run(sim, moto, call_id, workdir)
            expected = sim.digest(call_id, recording_id)
            if run["sha256"] != expected or read_back(moto, run["path"]) != expected:
                raise RuntimeError("the daemon archived other bytes than the recording's")
            runs.append(run)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            moto.clear()
        print(f"  {size // MIB} MiB run {rep + 1}: obstore bare {obs[-1]['seconds']:.2f}s "
              f"({obs[-1]['peak_rss_mib']} MiB), boto3 bare {boto[-1]['seconds']:.2f}s "
              f"({boto[-1]['peak_rss_mib']} MiB), daemon {runs[-1]['seconds']:.2f}s "
              f"({runs[-1]['peak_rss_mib']} MiB)", flush=True)
    best_obs = min(r["seconds"] for r in obs)
    best_boto = min(r["seconds"] for r in boto)
    best = min(float(r["seconds"]) for r in runs)

    def rate(s: float) -> float:
        return round(size / MIB / s, 1)

    return {"size_mib": size // MIB,
            "obstore_bare_s": round(best_obs, 3), "obstore_bare_mib_s": rate(best_obs),
            "obstore_bare_peak_rss_mib": max(r["peak_rss_mib"] for r in obs),
            "boto3_bare_s": round(best_boto, 3), "boto3_bare_mib_s": rate(best_boto),
            "boto3_bare_peak_rss_mib": max(r["peak_rss_mib"] for r in boto),
            "daemon_s": round(best, 3), "daemon_mib_s": rate(best),
            "ratio_vs_obstore_bare": round(best_obs / best, 3),
            "daemon_peak_rss_mib": max(r["peak_rss_mib"] for r in runs)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.archive_s3", description=__doc__)
    parser.add_argument("--sizes", default="256,1024", help="recording sizes in MiB")
    parser.add_argument("--reps", type=int, default=2, help="runs per size (best is kept)")
    parser.add_argument("--bare", choices=["obstore", "boto3"], help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = [int(s) * MIB for s in args.sizes.split(",")]
    if args.bare:
        upload = bare_obstore if args.bare == "obstore" else bare_boto3
        print(upload(args.endpoint, sizes[0]), flush=True)
        # obstore's runtime sometimes aborts (SIGABRT) while this throwaway process tears
        # down after asyncio.run(); the figure is out by then, so leave without teardown.
        os._exit(0)
    with tempfile.TemporaryDirectory(prefix="callwatch-bench-s3-") as tmp:
        moto = Moto(Path(tmp))
        sim = Simulator(Path(tmp))
        try:
            rows = [measure(sim, moto, size, args.reps, Path(tmp)) for size in sizes]
        finally:
            sim.close()
            moto.close()
    print(json.dumps(rows, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"cpus": os.cpu_count(), "reps": args.reps, "rows": rows},
                                  indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
