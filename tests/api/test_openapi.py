"""docs/openapi.json is what the API serves, describes every route, and fuzzing finds no 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.api.support import AUTH, TestRuntime, make_config
from worker.api.app import ApiApp
from worker.api.server import ApiServer
from worker.store.sqlite import SQLiteStore

DOCUMENT = Path(__file__).parents[2] / "docs" / "openapi.json"
FUZZ_EXAMPLES = 150  # per generation mode; the whole run stays well under 20 s


@pytest.mark.anyio
async def test_served_document_is_the_file_in_the_repository(client: httpx.AsyncClient) -> None:
    """GET /openapi.json answers docs/openapi.json byte for byte."""
    reply = await client.get("/openapi.json")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.content == DOCUMENT.read_bytes()


def test_every_route_of_the_app_is_in_the_document_and_nothing_else(tmp_path: Path) -> None:
    """The app's (method, path) pairs and the document's are the same set."""
    app = ApiApp(TestRuntime(config=make_config(tmp_path), store=None))  # type: ignore[arg-type]
    served = {(method.lower(), template) for method, template in app.operations()}
    paths = json.loads(DOCUMENT.read_text())["paths"]
    documented = {(method, path) for path, ops in paths.items() for method in ops}
    assert served == documented


def test_document_is_valid_openapi_3_1() -> None:
    """schemathesis loads it and finds every operation well-formed."""
    schema = schemathesis.openapi.from_path(DOCUMENT)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == 6


@pytest.fixture
def live_api(tmp_path: Path) -> Iterator[str]:
    """The API on a port, its loop in a thread: schemathesis' blocking client cannot share ours."""
    with start_blocking_portal(backend="asyncio") as portal:
        store = portal.call(SQLiteStore.open, tmp_path / "callwatch.db")
        api = ApiServer(TestRuntime(config=make_config(tmp_path), store=store),
                        listen="127.0.0.1:0")
        future, _ = portal.start_task(api.run)
        try:
            yield api.url
        finally:
            portal.call(api.stop)
            future.result(timeout=10)
            portal.call(store.close)


def test_fuzzing_the_live_api_from_the_document_finds_no_server_error(live_api: str) -> None:
    """Valid and invalid requests of every operation, with the token: never a 5xx."""
    schema = schemathesis.openapi.from_path(DOCUMENT)
    cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE),
                      schema.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(max_examples=2 * FUZZ_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(base_url=live_api, headers=dict(AUTH),
                               checks=[not_a_server_error])

    fuzz()
