"""How long from a call ending at the provider to ``call.ended`` at a webhook receiver.

Two paths, each measured with its own daemon (``python -m worker run``, as in production)
against the simulator (a process of its own) over loopback HTTP:

* ``polling``: the daemon notices the end at the call's next poll, so the latency is spread
  over one ``poll_interval`` (plus the poll and the delivery); reported next to that interval.
* ``webhook``: the poll interval is 30 s, so polling cannot explain what is seen. Right after
  the simulator ends a call, a correctly signed Ultravox ``call.ended`` webhook is posted to the
  daemon's ``/v1/providers/ultravox/webhook``, which makes the call due and wakes the lane.
  Aim: p99 under 250 ms.

Every call is tracked through ``POST /v1/calls``. For each one three instants are taken on the
same machine's wall clock: ``ended`` (the simulator's answer to "end it now"), ``detected``
(the ``call.ended`` event's time in the outbox, written by the poll that saw the end) and
``delivered`` (when the simulator's webhook sink received it). Ends are spaced out so the
daemon is never queueing them: the figure is the latency of one end, not a throughput.
"""

from __future__ import annotations

import json
import random
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from bench.common import (
    Report,
    Sim,
    Table,
    add_sim_calls,
    cli,
    percentile,
    simulator,
    write_config,
)
from worker.demo import new_webhook_secret, start_daemon, stop_daemon
from worker.simulator.ultravox_webhooks import signed_headers
from worker.simulator.world import new_call_id
from worker.store.sqlite import SQLiteStore

NAME = "endlatency"
TOKEN = "bench-api-token"  # noqa: S105 - a throwaway credential for a throwaway daemon
HOOK_SECRET = "bench-ultravox-webhook-secret"  # noqa: S105
TARGET_P99 = 0.250


@dataclass(frozen=True, kw_only=True)
class Params:
    calls: int = 200  # ends measured through the webhook path
    poll_calls: int = 60  # ends measured through polling
    poll_interval: float = 2.0  # the polling path's poll_interval, seconds
    gap: float = 0.05  # seconds between two ends (webhook path)


QUICK = Params(calls=40, poll_calls=15, poll_interval=1.0)


@dataclass(frozen=True, kw_only=True)
class Sample:
    call_id: str
    ended: float
    detected: float | None
    delivered: float | None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(workdir: Path, sim: Sim, *, interval: float, port: int) -> tuple[Path, dict[str, str]]:
    """The bench's usual daemon config, plus webhooks to the sink and the API."""
    tracking = {"poll_interval": interval, "pending_poll_interval": interval,
                "recording_poll_interval": interval, "recording_grace": 5}
    path, env = write_config(workdir, sim, tracking=tracking, log_level="warning")
    env |= {"BENCH_WEBHOOK_SECRET": new_webhook_secret(), "BENCH_API_TOKEN": TOKEN,
            "BENCH_ULTRAVOX_HOOK": HOOK_SECRET}
    with path.open("a", encoding="utf-8") as out:
        out.write(f'\n[[webhooks]]\nurl = "{sim.sink_url}"\nsecret_env = "BENCH_WEBHOOK_SECRET"\n'
                  f'\n[api]\nlisten = "127.0.0.1:{port}"\ntoken_env = "BENCH_API_TOKEN"\n'
                  'ultravox_webhook_secret_env = "BENCH_ULTRAVOX_HOOK"\n')
    return path, env


async def _sink_events(control: httpx.AsyncClient, kind: str) -> dict[str, float]:
    """call_id -> when the sink first received a ``kind`` event for it."""
    found: dict[str, float] = {}
    for request in (await control.get("/_control/sink")).json()["requests"]:
        try:
            event = json.loads(request["body"])
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("type") == kind:
            call_id = event["data"]["call_id"]
            found[call_id] = min(found.get(call_id, float("inf")), request["received_at"])
    return found


async def _wait_sink(control: httpx.AsyncClient, kind: str, ids: set[str],
                     timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        found = await _sink_events(control, kind)
        if ids <= set(found) or time.monotonic() > deadline:
            return found
        await anyio.sleep(0.2)


async def _outbox(db: Path, kind: str) -> dict[str, float]:
    store = await SQLiteStore.open(db)
    try:
        return {e.call_id: e.occurred_at for e in await store.events_after(0, 10_000_000)
                if e.type == kind}
    finally:
        await store.close()


async def _wait_healthy(api: httpx.AsyncClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (await api.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await anyio.sleep(0.1)
    raise RuntimeError("the daemon's API did not come up; see its log in the workdir")


async def _end(control: httpx.AsyncClient, api: httpx.AsyncClient, call_id: str,
               webhook: bool) -> float:
    """End the call at the simulator; on the webhook path, tell the daemon as Ultravox would."""
    reply = await control.post(f"/_control/calls/ultravox/{call_id}/end", json={})
    reply.raise_for_status()
    ended = float(reply.json()["ended_at"])
    if webhook:
        body = json.dumps({"event": "call.ended", "call": {
            "callId": call_id, "endReason": "hangup",
            "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ended))}}).encode()
        hook = await api.post("/v1/providers/ultravox/webhook", content=body,
                              headers=signed_headers(body, [HOOK_SECRET], time.time()))
        if hook.status_code != 200:
            raise RuntimeError(f"webhook answered {hook.status_code}: {hook.text}")
    return ended


async def measure(path: str, calls: int, interval: float, gap: float,
                  workdir: Path) -> list[Sample]:
    """Track ``calls`` live Ultravox calls, end them one by one, collect the three instants."""
    workdir.mkdir(parents=True)
    async with simulator(workdir) as sim:
        port = _free_port()
        config, env = _config(workdir, sim, interval=interval, port=port)
        proc = start_daemon(config, env, workdir / "daemon.log")
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10,
                                         headers={"Authorization": f"Bearer {TOKEN}"}) as api, \
                    httpx.AsyncClient(base_url=sim.control_url, timeout=30) as control:
                await _wait_healthy(api)
                ids = [new_call_id("ultravox") for _ in range(calls)]
                await add_sim_calls(sim, [{"provider": "ultravox", "call_id": i,
                                           "starts_after": 0.0, "lasts": None,
                                           "recordings": []} for i in ids])
                for call_id in ids:
                    reply = await api.post("/v1/calls", json={"provider": "ultravox",
                                                              "call_id": call_id})
                    reply.raise_for_status()
                started = await _wait_sink(control, "call.started", set(ids), 60)
                if len(started) < calls:
                    raise RuntimeError(f"only {len(started)} of {calls} calls started")
                ended: dict[str, float] = {}
                for call_id in random.sample(ids, len(ids)):
                    ended[call_id] = await _end(control, api, call_id, path == "webhook")
                    await anyio.sleep(gap * random.uniform(0.5, 1.5))
                delivered = await _wait_sink(control, "call.ended", set(ids), interval + 30)
        finally:
            stop_daemon(proc)
    detected = await _outbox(workdir / "callwatch.db", "call.ended")
    return [Sample(call_id=i, ended=ended[i], detected=detected.get(i),
                   delivered=delivered.get(i)) for i in ids]


def summarize(samples: Sequence[Sample]) -> dict[str, Any]:
    """Percentiles (seconds) from the end to detection and to delivery."""
    out: dict[str, Any] = {"n": len(samples)}
    for stage in ("detected", "delivered"):
        lags = [getattr(s, stage) - s.ended for s in samples if getattr(s, stage) is not None]
        out[stage] = {"n": len(lags), "p50": percentile(lags, 50), "p90": percentile(lags, 90),
                      "p99": percentile(lags, 99), "max": max(lags, default=float("nan")),
                      "mean": sum(lags) / len(lags) if lags else float("nan")}
    return out


async def run(params: Params) -> Report:
    with tempfile.TemporaryDirectory(prefix="callwatch-bench-") as tmp:
        polling = await measure("polling", params.poll_calls, params.poll_interval,
                                max(params.gap, 3 * params.poll_interval / params.poll_calls),
                                Path(tmp) / "polling")
        webhook = await measure("webhook", params.calls, 30.0, params.gap, Path(tmp) / "webhook")
    results = {"polling": summarize(polling) | {"poll_interval": params.poll_interval},
               "webhook": summarize(webhook) | {"poll_interval": 30.0}}
    rows = []
    for path in ("polling", "webhook"):
        r = results[path]
        for stage in ("detected", "delivered"):
            s = r[stage]
            rows.append((path, r["poll_interval"], stage, s["n"], s["p50"] * 1000,
                         s["p90"] * 1000, s["p99"] * 1000, s["max"] * 1000))
    p99 = results["webhook"]["delivered"]["p99"]
    notes = [
        f"webhook path: p99 end -> delivered {p99 * 1000:.0f} ms (target < "
        f"{TARGET_P99 * 1000:.0f} ms): {'met' if p99 < TARGET_P99 else 'NOT met'}",
        f"polling path: median end -> delivered is "
        f"{results['polling']['delivered']['p50'] / params.poll_interval:.2f} x the poll "
        f"interval ({params.poll_interval:g} s); expected about 0.5 (uniform over one interval)",
        "detected = the call.ended event's time in the outbox (the daemon's clock); delivered = "
        "when the simulator's webhook sink received it; both minus the simulator's end time",
    ]
    table = Table(title="end of call -> call.ended (milliseconds)",
                  columns=("path", "poll interval s", "until", "n", "p50", "p90", "p99", "max"),
                  rows=rows)
    return Report(name=NAME, params=asdict(params), results=results, tables=[table],
                  notes=notes)


def main(argv: Sequence[str] | None = None) -> int:
    return cli(NAME, __doc__, default=Params(), quick=QUICK,
               measure=lambda params: anyio.run(run, params), argv=argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
