"""The control API: drive a simulator running in another process over loopback HTTP.

    GET    /_control/urls                            base URLs, keys (the port file's content)
    POST   /_control/calls                           add a call: {"provider", ...CallScript}
    POST   /_control/calls/batch                     add many: {"calls": [{"provider", ...}]}
    GET    /_control/calls/{provider}/{id}           its script and current phase
    POST   /_control/calls/{provider}/{id}/end       end it now: {"reason"?, "status"?}
    GET    /_control/recordings/{provider}/{id}/{rec}  {"sha256", "size", "content_type"}
    GET    /_control/faults/{target}                 rules and hit counts
    POST   /_control/faults/{target}                 {"clear"?: bool, "seed"?: int, "rules": [..]}
    GET    /_control/sink                            every request the sink received
    POST   /_control/sink                            {"path"?, ...Behaviour fields}
    DELETE /_control/sink                            forget requests and behaviours
    POST   /_control/sink/down | /_control/sink/up    stop / restart the sink's server

Errors answer ``{"error": message}`` with 400 (bad input) or 404 (unknown call or target).
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio

from worker.simulator.asgi import Receive, Request, Router, Scope, Send, send_json
from worker.simulator.content import expected_sha256
from worker.simulator.faults import Faults
from worker.simulator.sink import ReceivedRequest, Sink
from worker.simulator.world import CallScript, RecordingScript, World, new_call_id


class Simulator(Protocol):
    """What the control API reaches in the running simulator (``server.Simulator`` is it).

    A Protocol, not an import of ``server``: the server builds this app, and importing it
    back would be an import cycle (tests/test_layering.py forbids even annotation-only ones).
    """

    world: World
    sink: Sink
    faults: dict[str, Faults]

    @property
    def sink_url(self) -> str: ...
    async def sink_down(self) -> None: ...
    async def sink_up(self) -> None: ...
    def describe(self) -> dict[str, Any]: ...


Result = tuple[int, Any]
ControlHandler = Callable[[Simulator, Request], Awaitable[Result]]


def script_json(script: CallScript, now: float) -> dict[str, Any]:
    data = dataclasses.asdict(script)
    data["phase"] = script.phase(now).value
    return data


def request_json(received: ReceivedRequest) -> dict[str, Any]:
    return {
        "method": received.method,
        "path": received.path,
        "query": received.query,
        "headers": [list(pair) for pair in received.headers],
        "body": received.body.decode("utf-8", "replace"),
        "body_base64": base64.b64encode(received.body).decode(),
        "received_at": received.received_at,
        "status": received.status,
    }


async def _urls(sim: Simulator, request: Request) -> Result:
    return 200, sim.describe()


async def _add_call(sim: Simulator, request: Request) -> Result:
    data = dict(await request.json())
    provider = data.pop("provider", None)
    if not isinstance(provider, str):
        raise TypeError("'provider' is required")
    recordings = data.pop("recordings", None)
    recs = None if recordings is None else [RecordingScript(**r) for r in recordings]
    script = sim.world.add_call(provider, data.pop("call_id", None), recordings=recs, **data)
    return 201, script_json(script, sim.world.clock())


async def _add_calls(sim: Simulator, request: Request) -> Result:
    """Many calls in one request: benchmarks add 100 000, one POST each would take minutes."""
    data = await request.json()
    calls = data.get("calls") if isinstance(data, dict) else None
    if not isinstance(calls, list):
        raise TypeError("'calls' must be a list of call scripts")
    now = sim.world.clock()
    added = [_script_from(dict(item), now) for item in calls]
    for script in added:
        sim.world.add(script)
    return 201, {"added": len(added)}


def _script_from(data: dict[str, Any], now: float) -> CallScript:
    """A ``CallScript`` from control-API JSON, with the defaults ``World.add_call`` gives."""
    provider = data.pop("provider", None)
    if not isinstance(provider, str):
        raise TypeError("'provider' is required")
    recordings = data.pop("recordings", None)
    recs = (RecordingScript(),) if recordings is None else tuple(
        RecordingScript(**r) for r in recordings)
    call_id = data.pop("call_id", None) or new_call_id(provider)
    created_at = data.pop("created_at", None)
    return CallScript(provider=provider, call_id=call_id, recordings=recs,
                      created_at=now if created_at is None else created_at, **data)


async def _get_call(sim: Simulator, request: Request) -> Result:
    script = sim.world.script(request.params["provider"], request.params["call_id"])
    return 200, script_json(script, sim.world.clock())


async def _end_call(sim: Simulator, request: Request) -> Result:
    data = await request.json()
    provider, call_id = request.params["provider"], request.params["call_id"]
    reason, status = data.get("reason"), data.get("status")
    script = sim.world.end_call(provider, call_id, reason=reason, status=status)
    return 200, script_json(script, sim.world.clock())


async def _digest(sim: Simulator, request: Request) -> Result:
    script = sim.world.script(request.params["provider"], request.params["call_id"])
    recording = script.recording(request.params["recording_id"])
    if recording is None:
        raise KeyError(request.params["recording_id"])
    digest = await anyio.to_thread.run_sync(expected_sha256, recording)
    ctype = script.content_type(recording)
    return 200, {"sha256": digest, "size": recording.size, "content_type": ctype}


async def _get_faults(sim: Simulator, request: Request) -> Result:
    faults = sim.faults[request.params["target"]]
    return 200, {
        "rules": [rule.to_json() for rule in faults.rules],
        "hits": {kind.value: count for kind, count in faults.hits.items()},
    }


async def _set_faults(sim: Simulator, request: Request) -> Result:
    faults = sim.faults[request.params["target"]]
    data = await request.json()
    if data.get("clear"):
        faults.clear()
    if "seed" in data:
        faults.reseed(int(data["seed"]))
    for rule in data.get("rules", ()):
        faults.add_json(rule)
    return await _get_faults(sim, request)


async def _get_sink(sim: Simulator, request: Request) -> Result:
    return 200, {"requests": [request_json(r) for r in sim.sink.requests]}


async def _set_sink(sim: Simulator, request: Request) -> Result:
    data = dict(await request.json())
    behaviour = sim.sink.behave(data.pop("path", None), **data)
    return 200, dataclasses.asdict(behaviour)


async def _reset_sink(sim: Simulator, request: Request) -> Result:
    sim.sink.reset()
    return 200, {"requests": []}


async def _sink_down(sim: Simulator, request: Request) -> Result:
    await sim.sink_down()
    return 200, {"sink": "down"}


async def _sink_up(sim: Simulator, request: Request) -> Result:
    await sim.sink_up()
    return 200, {"sink": "up", "url": sim.sink_url}


def _router() -> Router:
    router = Router()
    router.add("GET", "/_control/urls", _urls)
    router.add("POST", "/_control/calls", _add_call)
    router.add("POST", "/_control/calls/batch", _add_calls)
    router.add("GET", "/_control/calls/{provider}/{call_id}", _get_call)
    router.add("POST", "/_control/calls/{provider}/{call_id}/end", _end_call)
    router.add("GET", "/_control/recordings/{provider}/{call_id}/{recording_id}", _digest)
    router.add("GET", "/_control/faults/{target}", _get_faults)
    router.add("POST", "/_control/faults/{target}", _set_faults)
    router.add("GET", "/_control/sink", _get_sink)
    router.add("POST", "/_control/sink", _set_sink)
    router.add("DELETE", "/_control/sink", _reset_sink)
    router.add("POST", "/_control/sink/down", _sink_down)
    router.add("POST", "/_control/sink/up", _sink_up)
    return router


class ControlApp:
    """ASGI app of the control API for one running simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.router = _router()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        found = self.router.match(request.method, request.path)
        if isinstance(found, int):
            await send_json(send, found, {"error": f"no route {request.method} {request.path}"})
            return
        handler: ControlHandler = found[0]
        request.params = found[1]
        try:
            status, body = await handler(self.sim, request)
        except KeyError as exc:
            status, body = 404, {"error": f"unknown: {exc}"}
        except (ValueError, TypeError) as exc:  # bad JSON or a field that does not exist
            status, body = 400, {"error": str(exc)}
        await send_json(send, status, body)
