"""``callwatch demo``: the real daemon, as a subprocess, against the simulator on loopback.

Nothing is mocked: the simulator serves the three providers' APIs, signed recording links and
a webhook receiver over real HTTP on 127.0.0.1; the daemon is started exactly as systemd would
start it (``python -m worker --config FILE run``), calls are tracked with the real ``track``
command, and progress is read from the daemon's own database.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import anyio

from worker.simulator import SCENARIOS, CallScript, Simulator, World, run_simulator
from worker.simulator.world import RecordingScript
from worker.store.factory import open_store

DEMO_TIMEOUT = 50.0
WEBHOOK_WAIT = 10.0  # after the calls settle, for their last events to reach the receiver
FAST_TRACKING = {
    "poll_interval": 0.5,
    "pending_poll_interval": 0.5,
    "recording_poll_interval": 0.5,
    "recording_grace": 8,
    "not_found_grace": 5,
    "max_tracking_age": 120,
}


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def write_config(workdir: Path, sim: Simulator, *, archive: bool = True,
                 webhook: bool = True, tracking: Mapping[str, float] | None = None,
                 extra: str = "") -> tuple[Path, dict[str, str]]:
    """Write a daemon config pointing at ``sim``; return its path and the env it needs."""
    env = {
        "SIM_ULTRAVOX_KEY": sim.api_keys["ultravox"],
        "SIM_ENVOY_KEY": sim.api_keys["envoy"],
        "SIM_WEBHOOK_SECRET": new_webhook_secret(),
    }
    lines = ["[worker]", 'database = "callwatch.db"']
    if archive:
        lines.append('archive_dir = "recordings"')
    lines += ["", "[tracking]"]
    lines += [f"{key} = {value}" for key, value in (tracking or FAST_TRACKING).items()]
    lines += [
        "", "[providers.ultravox]", f'base_url = "{sim.base_urls["ultravox"]}"',
        'api_key_env = "SIM_ULTRAVOX_KEY"',
        "", "[providers.envoy]", f'base_url = "{sim.base_urls["envoy"]}"',
        'api_key_env = "SIM_ENVOY_KEY"',
        "", "[providers.apifycloud]", f'base_url = "{sim.base_urls["apifycloud"]}"',
    ]
    if webhook:
        lines += ["", "[[webhooks]]", f'url = "{sim.sink_url}"',
                  'secret_env = "SIM_WEBHOOK_SECRET"', "retry_schedule = [0.5, 1, 2, 4]",
                  "timeout = 5"]
    path = workdir / "callwatch.toml"
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path, env


def start_daemon(config: Path, env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``python -m worker --config FILE run`` with its logs (JSON lines) in ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "worker", "--config", str(config), "run"],
            env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
        )


def stop_daemon(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _scripts(world: World, calls: int) -> list[CallScript]:
    scripts = SCENARIOS["demo"](world)
    providers = ("ultravox", "envoy", "apifycloud")
    i = 0
    while len(scripts) < calls:
        scripts.append(world.add_call(providers[i % 3], starts_after=1 + i % 3, lasts=3 + i % 4,
                                      recordings=[RecordingScript(ready_after=1 + i % 2,
                                                                  size=128 * 1024)]))
        i += 1
    return scripts[:calls] if calls > 0 else scripts


class _Printer:
    def __init__(self, started: float) -> None:
        self.started = started
        self.short: dict[tuple[str, str], str] = {}

    def name(self, provider: str, call_id: str) -> str:
        key = (provider, call_id)
        if key not in self.short:
            self.short[key] = f"{provider:<10} {call_id[:13]}"
        return self.short[key]

    def line(self, text: str) -> None:
        print(f"  +{time.monotonic() - self.started:5.1f}s  {text}", flush=True)


async def _follow(store_path: Path, scripts: list[CallScript], sim: Simulator,
                  printer: _Printer, proc: subprocess.Popen[bytes]) -> bool:
    """Print every event as the daemon writes it; True once every call is terminal."""
    seq, deadline = 0, time.monotonic() + DEMO_TIMEOUT
    store = await open_store(store_path)
    try:
        while time.monotonic() < deadline:
            for event in await store.events_after(seq, 500):
                seq = event.seq
                printer.line(f"{printer.name(event.provider, event.call_id)}  {event.type}")
            counts = await store.counts()
            if counts.active == 0 and sum(counts.calls_by_state.values()) >= len(scripts):
                return True
            if proc.poll() is not None:
                print(f"the daemon exited early with code {proc.returncode}", file=sys.stderr)
                return False
            await anyio.sleep(0.25)
    finally:
        await store.close()
    return False


async def _demo(calls: int, command: Callable[[list[str]], int]) -> int:
    from worker import logs

    logs.setup("warning")
    world = World()
    scripts = _scripts(world, calls)
    with tempfile.TemporaryDirectory(prefix="callwatch-demo-") as tmp:
        workdir = Path(tmp)
        async with run_simulator(world) as sim:
            # The whole pipeline: events reach the webhook receiver, recordings the archive.
            config, env = write_config(workdir, sim, archive=True, webhook=True)
            found = _discoverable(world, config)
            print(f"callwatch demo: simulator on loopback "
                  f"({', '.join(f'{p} {u}' for p, u in sim.base_urls.items())}); "
                  f"webhooks to {sim.sink_url}\n  workdir {workdir}", flush=True)
            proc = start_daemon(config, env, workdir / "daemon.log")
            printer = _Printer(time.monotonic())
            try:
                for script in scripts:
                    argv = ["--config", str(config), "track", script.provider, script.call_id,
                            "--metadata", f'{{"demo": true, "scenario": "{script.provider}"}}']
                    code = await anyio.to_thread.run_sync(command, argv)
                    printer.line(f"{printer.name(script.provider, script.call_id)}  tracked "
                                 f"(callwatch track exited {code})")
                printer.line(f"{printer.name(found.provider, found.call_id)}  never tracked: "
                             "left for discovery to find")
                done = await _follow(config.parent / "callwatch.db", [*scripts, found], sim,
                                     printer, proc)
                done = done and await _delivered(config.parent / "callwatch.db", sim)
            finally:
                code = stop_daemon(proc)
            await _summary(config.parent / "callwatch.db", sim, workdir, done, code)
            if not done:
                print("\n--- daemon log (last lines) ---", file=sys.stderr)
                log_lines = (workdir / "daemon.log").read_text(errors="replace").splitlines()
                print("\n".join(log_lines[-30:]), file=sys.stderr)
    return 0 if done and code == 0 else 1


def _discoverable(world: World, config: Path) -> CallScript:
    """One Ultravox call nobody tracks, and discovery switched on to find it.

    ``discover_since`` lies between the tracked calls' creation and this one's, so discovery
    finds only this call and the tracked ones keep the metadata ``track`` gives them.
    """
    from datetime import UTC, datetime

    now = world.clock()
    script = world.add_call("ultravox", created_at=now + 1.0, starts_after=2, lasts=3,
                            recordings=[RecordingScript(ready_after=1, size=128 * 1024)])
    since = datetime.fromtimestamp(now + 0.5, UTC).isoformat()
    key = 'api_key_env = "SIM_ULTRAVOX_KEY"'
    config.write_text(config.read_text().replace(
        key, f'{key}\ndiscover = true\ndiscover_interval = 1\ndiscover_since = "{since}"'))
    return script


def _received_ids(sim: Simulator) -> set[str | None]:
    return {r.header("webhook-id") for r in sim.sink.requests if 200 <= r.status < 300}


async def _delivered(db: Path, sim: Simulator) -> bool:
    """Wait until the receiver has every event the outbox holds (the relay runs behind)."""
    store = await open_store(db)
    try:
        events = (await store.counts()).events
    finally:
        await store.close()
    try:
        await sim.sink.wait_for(lambda _: len(_received_ids(sim)) >= events, WEBHOOK_WAIT)
    except TimeoutError:
        print(f"only {len(_received_ids(sim))} of {events} events reached the webhook "
              f"receiver", file=sys.stderr)
        return False
    return True


async def _summary(db: Path, sim: Simulator, workdir: Path, done: bool, code: int) -> None:
    store = await open_store(db)
    try:
        counts = await store.counts()
        calls = await store.list_calls(limit=1000, include_terminal=True)
    finally:
        await store.close()
    totals: dict[str, int] = {}
    for (_, state), n in counts.calls_by_state.items():
        totals[state] = totals.get(state, 0) + n
    recordings: dict[str, int] = {}
    for call in calls:
        for rec in call.recordings:
            recordings[str(rec.status)] = recordings.get(str(rec.status), 0) + 1
    archive = workdir / "recordings"
    files = [p for p in archive.rglob("*") if p.is_file()] if archive.exists() else []
    print("\nsummary:")
    print(f"  calls:       {', '.join(f'{n} {s}' for s, n in sorted(totals.items()))}")
    print(f"  events:      {counts.events} written to the outbox")
    print(f"  webhooks:    {len(_received_ids(sim))} of {counts.events} events received by the "
          f"simulator's receiver, signed ({len(sim.sink.requests)} requests)")
    print(f"  recordings:  {', '.join(f'{n} {s}' for s, n in sorted(recordings.items())) or '-'}"
          f"; {len(files)} file(s), {sum(p.stat().st_size for p in files)} bytes archived")
    print(f"  daemon:      exited {code} after SIGTERM")
    print("done: every call settled" if done else "NOT DONE: some calls did not settle in time")


def run_demo(command: Callable[[list[str]], int], calls: int = 9) -> int:
    """Entry point of ``callwatch demo``; ``command`` is the CLI's own ``main``, handed in so
    that the demo tracks calls the way an operator does without importing the CLI (which
    imports this module: no import cycle)."""
    return anyio.run(_demo, calls, command)
