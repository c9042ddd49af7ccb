"""``python -m worker.simulator --port-file PATH``: the simulator in a process of its own.

For tests that run the daemon in one process and drive the simulator from another: once every
server listens, the URLs, API keys and the scenario's calls are written as JSON to PATH
(atomically, so a reader polling for the file never sees half of it). Runs until SIGTERM or
SIGINT, then removes the file. Drive it through the control API (``control_url``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from collections.abc import Sequence

import anyio

from worker.simulator.scenarios import SCENARIOS
from worker.simulator.server import run_simulator
from worker.simulator.world import World


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m worker.simulator", description=__doc__)
    parser.add_argument("--port-file", required=True, help="where to write the URLs as JSON")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="empty")
    parser.add_argument("--link-ttl", type=int, default=300, help="signed link lifetime (s)")
    parser.add_argument(
        "--ultravox-rate-limit", type=float, default=200.0, help="requests/s per key; 0: none"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    world = World()
    calls = SCENARIOS[args.scenario](world)
    port_file = anyio.Path(args.port_file)
    async with run_simulator(
        world,
        link_ttl=args.link_ttl,
        ultravox_rate_limit=args.ultravox_rate_limit or None,
        seed=args.seed,
    ) as sim:
        info = {
            **sim.describe(),
            "pid": os.getpid(),
            "calls": [{"provider": c.provider, "call_id": c.call_id} for c in calls],
        }
        partial = port_file.with_name(port_file.name + ".partial")
        await partial.write_text(json.dumps(info, indent=2))
        await partial.replace(port_file)
        try:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
        finally:
            await port_file.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    anyio.run(_serve, _parse(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
