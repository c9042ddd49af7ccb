"""Ready-made worlds: what ``callwatch demo`` and the standalone simulator start with.

A scenario adds calls to a world and returns them, so whoever drives the daemon knows what to
track. Durations are short: the demo should show every event type within about half a minute.
"""

from __future__ import annotations

from collections.abc import Callable

from worker.simulator.world import CallScript, RecordingScript, World

KIB = 1024


def demo(world: World) -> list[CallScript]:
    """One call per interesting path: recorded, unjoined, no answer, failed recording."""
    return [
        world.add_call(
            "ultravox",
            starts_after=1,
            lasts=5,
            recordings=[RecordingScript(ready_after=2, size=256 * KIB)],
            metadata={"customer": "acme"},
        ),
        world.add_call("ultravox", starts_after=None, join_timeout=6),
        world.add_call(
            "envoy",
            starts_after=2,
            lasts=6,
            recordings=[RecordingScript(ready_after=3, size=512 * KIB)],
        ),
        world.add_call("envoy", starts_after=None, join_timeout=5, recordings=()),
        world.add_call(
            "apifycloud",
            starts_after=1,
            lasts=8,
            recordings=[
                RecordingScript(ready_after=2, size=1024 * KIB),
                RecordingScript(ready_after=4, fails=True),
            ],
        ),
    ]


def empty(world: World) -> list[CallScript]:
    """No calls: the test adds its own through the control API."""
    return []


SCENARIOS: dict[str, Callable[[World], list[CallScript]]] = {"demo": demo, "empty": empty}
