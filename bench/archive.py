"""``python -m bench.archive``: archiving a big recording, next to ``curl -o`` of the same link.

Everything runs on loopback, each part in its own process so none shares an event loop (or a
GIL) with another: the simulator (``python -m worker.simulator``), ``curl``, and the real daemon
(``python -m worker --config FILE run``) archiving an Envoy recording of the given size.

Per size, best of ``--reps`` runs of each:

- ``curl -o``: the bare transfer to a file, nothing checked;
- ``curl + sha256sum + sync``: the same work as an archiver by hand (digest, durable file);
- the daemon: the ``seconds`` of its ``recording.archived`` log line (fetching, checking,
  hashing, fsync, rename), its throughput, and its peak RSS (``VmHWM``) over its whole life;
- ``sha256 alone``: how fast this Python hashes in memory, the ceiling of any verified archive.

Prints a table and writes ``bench/results/archive.json``. The daemon's digest is checked
against the simulator's own; a wrong byte fails the benchmark.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

MIB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "archive.json"


class Simulator:
    """``python -m worker.simulator`` in a process of its own."""

    def __init__(self, workdir: Path) -> None:
        port_file = workdir / "sim.json"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker.simulator", "--port-file", str(port_file),
             "--ultravox-rate-limit", "0", "--link-ttl", "3600"],
            stdout=subprocess.DEVNULL, stderr=(workdir / "sim.log").open("wb"))
        deadline = time.monotonic() + 20
        while not port_file.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the simulator did not start; see sim.log")
            time.sleep(0.05)
        self.info: dict[str, Any] = json.loads(port_file.read_text())
        self.http = httpx.Client(timeout=60)

    def add_recording(self, size: int, seed: int) -> tuple[str, str]:
        """An ended Envoy call with one ready recording; returns (call id, recording id)."""
        reply = self.http.post(self.info["control_url"] + "/_control/calls", json={
            "provider": "envoy", "starts_after": 0, "lasts": 0.05,
            "recordings": [{"ready_after": 0, "size": size, "seed": seed}]})
        reply.raise_for_status()
        time.sleep(0.2)
        data = reply.json()
        return data["call_id"], data["recordings"][0]["id"]

    def link(self, call_id: str) -> str:
        reply = self.http.get(
            self.info["base_urls"]["envoy"] + f"/api/v1/calls/{call_id}/recording",
            headers={"Authorization": "Bearer " + self.info["api_keys"]["envoy"]})
        reply.raise_for_status()
        return str(reply.json()["url"])

    def digest(self, call_id: str, recording_id: str) -> str:
        url = f"{self.info['control_url']}/_control/recordings/envoy/{call_id}/{recording_id}"
        return str(self.http.get(url).json()["sha256"])

    def close(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


def timed(argv: Sequence[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def curl_runs(sim: Simulator, call_id: str, workdir: Path) -> tuple[float, float]:
    """Seconds for ``curl -o`` alone, and for curl + sha256sum + sync of the file."""
    target = workdir / "curl.bin"
    bare = timed(["curl", "-sSf", "-o", str(target), sim.link(call_id)])
    target.unlink()
    script = 'curl -sSf -o "$1" "$2" && sha256sum "$1" && sync "$1"'
    by_hand = timed(["bash", "-c", script, "bench", str(target), sim.link(call_id)])
    target.unlink()
    return bare, by_hand


class PeakRss:
    """Samples a process's VmHWM (peak resident set) until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while not self._stop.wait(0.05):
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            except (OSError, ValueError):
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_kib


def daemon_config(sim: Simulator, workdir: Path) -> Path:
    path = workdir / "callwatch.toml"
    path.write_text("\n".join([
        "[worker]", 'database = "callwatch.db"', 'archive_dir = "recordings"',
        "[tracking]", "poll_interval = 0.2", "pending_poll_interval = 0.2",
        "recording_poll_interval = 0.2",
        "[providers.envoy]", f'base_url = "{sim.info["base_urls"]["envoy"]}"',
        'api_key_env = "BENCH_ENVOY_KEY"', "[archive]", "timeout = 60", ""]))
    return path


def daemon_run(sim: Simulator, call_id: str, workdir: Path) -> dict[str, Any]:
    """Archive the recording with a fresh daemon; its archived log line plus its peak RSS."""
    config = daemon_config(sim, workdir)
    env = {**os.environ, "BENCH_ENVOY_KEY": sim.info["api_keys"]["envoy"]}
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
        archived_peak = rss.stop()
    archived["peak_rss_mib"] = round(archived_peak / 1024, 1)
    return archived


def _wait_for_line(log_path: Path, proc: subprocess.Popen[bytes], event: str) -> dict[str, Any]:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        for raw in log_path.read_text(errors="replace").splitlines():
            if f'"{event}"' in raw:
                found: dict[str, Any] = json.loads(raw)
                return found
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited ({proc.returncode}); see {log_path}")
        time.sleep(0.05)
    raise RuntimeError(f"no {event} within 600 s; see {log_path}")


def hash_ceiling(size: int) -> float:
    """Seconds this Python needs to SHA-256 ``size`` bytes already in memory."""
    block = os.urandom(MIB)
    digest = hashlib.sha256()
    started = time.perf_counter()
    for _ in range(size // MIB):
        digest.update(block)
    return time.perf_counter() - started


def measure(sim: Simulator, size: int, reps: int, scratch: Path) -> dict[str, Any]:
    """Best of ``reps`` runs of curl, curl-by-hand and the daemon, interleaved."""
    bare, by_hand, runs = [], [], []
    for rep in range(reps):
        call_id, recording_id = sim.add_recording(size, seed=size // MIB * 100 + rep)
        workdir = Path(tempfile.mkdtemp(dir=scratch))
        try:
            curl, manual = curl_runs(sim, call_id, workdir)
            bare.append(curl)
            by_hand.append(manual)
            run = daemon_run(sim, call_id, workdir)
            if run["sha256"] != sim.digest(call_id, recording_id) or run["size"] != size:
                raise RuntimeError("the daemon archived other bytes than the recording's")
            runs.append(run)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"  {size // MIB} MiB run {rep + 1}: curl {curl:.2f}s, by hand {manual:.2f}s, "
              f"daemon {runs[-1]['seconds']:.2f}s, peak RSS {runs[-1]['peak_rss_mib']} MiB",
              flush=True)
    best = min(runs, key=lambda r: float(r["seconds"]))
    return _row(size, curl=min(bare), by_hand=min(by_hand), daemon=best,
                peak=max(r["peak_rss_mib"] for r in runs), hashing=hash_ceiling(size))


def _row(size: int, *, curl: float, by_hand: float, daemon: dict[str, Any], peak: float,
         hashing: float) -> dict[str, Any]:
    seconds = float(daemon["seconds"])

    def rate(s: float) -> float:
        return round(size / MIB / s, 1)

    return {
        "size_mib": size // MIB, "curl_s": round(curl, 3), "curl_mib_s": rate(curl),
        "by_hand_s": round(by_hand, 3), "by_hand_mib_s": rate(by_hand),
        "daemon_s": round(seconds, 3), "daemon_mib_s": rate(seconds),
        "ratio_vs_curl": round(curl / seconds, 3), "ratio_vs_by_hand": round(by_hand / seconds, 3),
        "sha256_alone_s": round(hashing, 3), "sha256_alone_mib_s": rate(hashing),
        "daemon_peak_rss_mib": peak,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'size':>8} {'curl -o':>14} {'curl+sha+sync':>15} {'daemon':>14} "
            f"{'ratio/curl':>10} {'ratio/hand':>10} {'sha256 only':>12} {'peak RSS':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['size_mib']:>4} MiB {r['curl_s']:>6.2f}s {r['curl_mib_s']:>4.0f}MiB/s "
            f"{r['by_hand_s']:>6.2f}s {r['by_hand_mib_s']:>4.0f}MiB/s "
            f"{r['daemon_s']:>6.2f}s {r['daemon_mib_s']:>4.0f}MiB/s {r['ratio_vs_curl']:>10.2f} "
            f"{r['ratio_vs_by_hand']:>10.2f} {r['sha256_alone_mib_s']:>7.0f}MiB/s "
            f"{r['daemon_peak_rss_mib']:>5.1f}MiB")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.archive", description=__doc__)
    parser.add_argument("--sizes", default="256,1024", help="recording sizes in MiB")
    parser.add_argument("--reps", type=int, default=3, help="runs per size (best is kept)")
    args = parser.parse_args(argv)
    if shutil.which("curl") is None:
        print("curl is needed for the baseline", file=sys.stderr)
        return 2
    sizes = [int(s) * MIB for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="callwatch-bench-") as tmp:
        sim = Simulator(Path(tmp))
        try:
            rows = [measure(sim, size, args.reps, Path(tmp)) for size in sizes]
        finally:
            sim.close()
    print()
    print(table(rows))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"cpus": os.cpu_count(), "reps": args.reps, "rows": rows},
                                  indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
