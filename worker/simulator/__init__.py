"""Fake call providers, a signed-URL file store and a webhook sink, on loopback HTTP.

For tests, ``callwatch demo`` and benchmarks: the real daemon talks to these exactly as it
talks to Ultravox, Envoy and apifycloud (PROVIDERS.md).

    world = World()
    call = world.add_call("ultravox", starts_after=0, lasts=1)
    async with run_simulator(world) as sim:
        sim.base_urls["ultravox"], sim.api_keys["ultravox"]   # configure the daemon with these
        sim.faults["files"].add(Fault.TRUNCATE_BODY, count=1)
        await sim.sink.wait_for(lambda requests: len(requests) >= 3)
        expected_sha256(call.recordings[0])                    # what the archive must hold

Modules: ``world`` (scripts, computed state), one module per provider, ``files`` (signed
links and bytes), ``faults``, ``sink``, ``server`` (running it), ``control`` and
``__main__`` (driving it from another process).
"""

from worker.simulator.content import content_bytes, expected_sha256, iter_content
from worker.simulator.faults import Fault, Faults, Rule
from worker.simulator.scenarios import SCENARIOS
from worker.simulator.server import DEFAULT_API_KEYS, Simulator, run_simulator
from worker.simulator.sink import Behaviour, ReceivedRequest, Sink
from worker.simulator.world import (
    PROVIDERS,
    CallScript,
    Phase,
    RecordingPhase,
    RecordingScript,
    World,
    new_call_id,
)

__all__ = [
    "DEFAULT_API_KEYS",
    "PROVIDERS",
    "SCENARIOS",
    "Behaviour",
    "CallScript",
    "Fault",
    "Faults",
    "Phase",
    "ReceivedRequest",
    "RecordingPhase",
    "RecordingScript",
    "Rule",
    "Simulator",
    "Sink",
    "World",
    "content_bytes",
    "expected_sha256",
    "iter_content",
    "new_call_id",
    "run_simulator",
]
