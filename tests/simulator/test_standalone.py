"""``python -m worker.simulator``: a simulator in its own process, driven over HTTP."""

from __future__ import annotations

import hashlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import Process

from worker.simulator import RecordingScript, expected_sha256

REPO = Path(__file__).resolve().parents[2]


async def _wait_for_file(path: Path, process: Process) -> dict[str, Any]:
    with anyio.fail_after(20):
        while not await anyio.Path(path).exists():
            assert process.returncode is None, "the simulator exited early"
            await anyio.sleep(0.05)
    return dict(json.loads(await anyio.Path(path).read_text()))


@pytest.fixture
async def standalone(tmp_path: Path) -> AsyncIterator[tuple[dict[str, Any], Process, Path]]:
    port_file = tmp_path / "simulator.json"
    command = [sys.executable, "-m", "worker.simulator", "--port-file", str(port_file)]
    async with await anyio.open_process(
        [*command, "--scenario", "demo"], cwd=REPO, stdout=None, stderr=None
    ) as process:
        try:
            yield await _wait_for_file(port_file, process), process, port_file
        finally:
            if process.returncode is None:
                process.terminate()
                with anyio.move_on_after(5):
                    await process.wait()
            if process.returncode is None:
                process.kill()


@pytest.mark.anyio
async def test_standalone_writes_its_port_file_and_is_controllable(
    standalone: tuple[dict[str, Any], Process, Path], client: httpx.AsyncClient
) -> None:
    """Port file written; control API adds/ends calls, digests, faults, sink; SIGTERM exits 0."""
    info, process, port_file = standalone
    assert set(info["base_urls"]) == {"ultravox", "envoy", "apifycloud"}
    assert len(info["calls"]) == 5
    control = info["control_url"] + "/_control"
    added = await client.post(
        control + "/calls",
        json={"provider": "ultravox", "lasts": None, "recordings": [{"ready_after": 0, "seed": 9}]},
    )
    assert added.status_code == 201
    call_id, rec_id = added.json()["call_id"], added.json()["recordings"][0]["id"]
    call_url = f"{info['base_urls']['ultravox']}/api/calls/{call_id}"
    auth = {"X-API-Key": info["api_keys"]["ultravox"]}
    assert (await client.get(call_url, headers=auth)).json()["ended"] is None
    assert (
        await client.post(f"{control}/calls/ultravox/{call_id}/end", json={})
    ).status_code == 200
    assert (await client.get(call_url, headers=auth)).json()["endReason"] == "hangup"

    digest = (await client.get(f"{control}/recordings/ultravox/{call_id}/{rec_id}")).json()
    assert digest["sha256"] == expected_sha256(RecordingScript(seed=9))
    link = (await client.get(call_url + "/recording", headers=auth)).headers["location"]
    assert hashlib.sha256((await client.get(link)).content).hexdigest() == digest["sha256"]

    rules = {"rules": [{"kind": "server_error", "count": 1, "status": 502}]}
    assert (await client.post(control + "/faults/ultravox", json=rules)).status_code == 200
    assert (await client.get(call_url, headers=auth)).status_code == 502
    bad = await client.post(control + "/faults/ultravox", json={"rules": [{"kind": "nope"}]})
    assert bad.status_code == 400

    await client.post(control + "/sink", json={"path": "/hooks/x", "status": 410})
    assert (await client.post(info["sink_url"] + "/x", content=b"hello")).status_code == 410
    (received,) = (await client.get(control + "/sink")).json()["requests"]
    assert (received["path"], received["body"], received["status"]) == ("/hooks/x", "hello", 410)

    process.send_signal(signal.SIGTERM)
    with anyio.fail_after(10):
        assert await process.wait() == 0
    assert not port_file.exists()


@pytest.mark.anyio
async def test_the_sink_can_go_down_and_up_over_the_control_api(
    standalone: tuple[dict[str, Any], Process, Path], client: httpx.AsyncClient
) -> None:
    """POST /_control/sink/down refuses connections until /_control/sink/up."""
    info, _, _ = standalone
    assert (await client.post(info["control_url"] + "/_control/sink/down")).status_code == 200
    with pytest.raises(httpx.ConnectError):
        await client.post(info["sink_url"], content=b"{}")
    assert (await client.post(info["control_url"] + "/_control/sink/up")).status_code == 200
    assert (await client.post(info["sink_url"], content=b"{}")).status_code == 200
